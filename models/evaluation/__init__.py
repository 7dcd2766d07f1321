"""Evaluation of trained models: the `flam eval` protocol, model cards and the entity-scaling experiments."""
