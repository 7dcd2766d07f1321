# The FLAM Studio UI (Gradio), a client of the API over HTTP: no torch. Same steps as the Makefile's venv
# (python3.11 -m venv, pip upgraded), then the project's `ui` extra and base dependencies less torch, read from
# pyproject.toml so there is one list of pins, and the project itself without dependencies.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli cli
COPY worlds worlds
COPY models models
COPY backend backend
COPY frontend frontend
RUN python3.11 -m venv .venv \
    && .venv/bin/pip install --upgrade --quiet pip \
    && .venv/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join([d for d in p['dependencies'] if not d.startswith('torch')] + p['optional-dependencies']['ui']))" \
       > /tmp/ui-requirements.txt \
    && .venv/bin/pip install --quiet -r /tmp/ui-requirements.txt \
    && .venv/bin/pip install --quiet --no-deps -e . \
    && .venv/bin/python -c "import flam.frontend.app, sys; assert 'torch' not in sys.modules"
ENV PATH=/app/.venv/bin:$PATH
RUN useradd --create-home --uid 10001 flam
USER flam
EXPOSE 7860
CMD ["flam", "ui", "--api", "http://backend:8000", "--host", "0.0.0.0", "--port", "7860"]
