"""Quality filters: score every sample, record each check's verdict, choose the training subset."""
