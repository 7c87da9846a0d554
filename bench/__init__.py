"""Benchmarks: `./scripts/bench [name ...]` (or `python -m bench`). Each prints its numbers."""
