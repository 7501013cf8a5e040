"""fleet internals: not a public API."""
