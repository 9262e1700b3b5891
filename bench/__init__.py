"""Benchmarks: speed measured against raw ceilings in the same run, never asserted in tests."""
