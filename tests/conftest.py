"""Shared pytest configuration: fixtures live in tests/fixtures/, one module per part."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.models",
    "tests.fixtures.embedder",
    "tests.fixtures.search",
]
