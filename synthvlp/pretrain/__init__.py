"""Pre-training stages: CLIP-style MedVLP models on synthetic, real or mixed data."""
