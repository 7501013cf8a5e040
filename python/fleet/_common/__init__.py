"""Helpers shared by fleet's libraries and tests (Ray's ``ray._common``)."""
