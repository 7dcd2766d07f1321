"""FLAM, the monolithic baseline, their tokenizer, rollout, checkpoints, training and metrics (torch)."""
