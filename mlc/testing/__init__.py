"""Helpers shared by the test suite and the benchmarks (``mlc.testing.models``: the model zoo)."""
