"""Fixtures shared by every test folder; each lives in its own module under tests/fixtures."""

pytest_plugins = [
    "fixtures.s3",
    "fixtures.prometheus",
    "fixtures.chart",
    "fixtures.items",
    "fixtures.models",
]
