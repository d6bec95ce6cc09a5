"""ccrec.evaluation."""
