"""Evaluation stages: zero-shot classification and grounding, fine-tuning protocols."""
