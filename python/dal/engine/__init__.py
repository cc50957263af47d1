"""Training, scoring and checkpoints of DAL and its baselines."""
