"""Event relationships: validation, aggregation and the relations/threads endpoints."""
