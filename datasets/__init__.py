"""glocal datasets."""
