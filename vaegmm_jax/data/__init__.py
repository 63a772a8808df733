"""Loaders of the public data sets the examples, tests and benchmarks use (no network unless asked)."""
