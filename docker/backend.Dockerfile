# The FLAM API (FastAPI + torch). Installs exactly as `make install` does: the same Makefile target, so the pins
# (torch==2.13.0 first, then the project's eval/serve/ui extras, then the weights-only metric packages) stay one.
# Build from the repository root: docker compose build backend (or docker build -f docker/backend.Dockerfile .).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY Makefile pyproject.toml README.md ./
COPY cli cli
COPY worlds worlds
COPY models models
COPY backend backend
COPY frontend frontend
RUN make install PYTHON=python3.11
ENV PATH=/app/.venv/bin:$PATH FLAM_CHECKPOINTS=/app/checkpoints
# Checkpoints are not baked in: docker-compose mounts ./checkpoints here read-only.
RUN mkdir -p /app/checkpoints && useradd --create-home --uid 10001 flam
USER flam
EXPOSE 8000
CMD ["flam", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-ui"]
