"""API fuzzing driven by the spec's OpenAPI definitions."""
