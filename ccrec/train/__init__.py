"""ccrec.train."""
