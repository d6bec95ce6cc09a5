"""ccrec.models."""
