"""Cost accounting and profiling."""
