"""Multi-entity worlds, the on-disk dataset format and video import (numpy only, no torch)."""
