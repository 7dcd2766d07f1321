"""FLAM Studio: command line entry points."""
