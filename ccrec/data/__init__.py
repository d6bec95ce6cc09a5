"""ccrec.data."""
