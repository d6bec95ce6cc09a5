"""ccrec.serving: on-device bundle and its numpy-only runtime (imports no jax)."""
