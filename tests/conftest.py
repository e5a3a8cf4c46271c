"""Shared pytest configuration: every test is bounded (pytest-timeout is
set in pyproject.toml); this file only makes the repo's tests importable."""
