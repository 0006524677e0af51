"""Fixture programs for the load tests (loadtest/run_benchmark.sh)."""
