"""Benchmarks and their helpers (not collected by pytest: see norecursedirs in pyproject.toml)."""
