"""`flam data`: placeholder registration, filled in by the worlds work."""
