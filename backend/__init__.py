"""FastAPI backend: model registry, REST routes, codecs and caches."""
