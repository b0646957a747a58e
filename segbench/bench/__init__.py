"""Backends and the benchmark harness."""
