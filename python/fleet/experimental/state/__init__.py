"""Ray's older home of the state API (``ray.experimental.state``): see fleet.util.state."""
