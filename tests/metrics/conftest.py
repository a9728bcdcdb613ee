"""Metrics test fixtures: the API tests' pooled databases."""

from tests.api.conftest import database, postgres_pool

__all__ = ["database", "postgres_pool"]
