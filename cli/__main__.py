"""`python -m flam` is the same as the `flam` console script."""

from flam.main import entry

entry()
