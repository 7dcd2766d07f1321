"""Gradio studio: a client of the public REST API only (no torch)."""
