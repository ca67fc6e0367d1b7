"""Benchmarks: run with `make bench-jwks` (and, later, `make bench`)."""
