"""Reusable layers shared by zoo models (neighborhood attention, ...)."""
