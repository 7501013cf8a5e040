"""`ray.tests` under the shim: only `ray.tests.conftest` (ray_fixtures) is provided."""
