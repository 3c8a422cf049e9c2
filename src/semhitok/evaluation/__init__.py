"""Evaluation: reconstruction metrics, FID on Inception features, codebook statistics."""
