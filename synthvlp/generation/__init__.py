"""Generation stages: entity plans, report text and images."""
