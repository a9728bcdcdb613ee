"""Persistence: one ``Storage`` object composed of one store per concern."""
