"""Efficiency methods that the harness applies to a built zoo model (token pruning, weight pruning, ...)."""
