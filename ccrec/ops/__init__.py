"""ccrec.ops."""
