"""Click shells over the importable runtime functions."""
