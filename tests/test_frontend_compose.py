"""docker-compose.yml and the two Dockerfiles: valid for the compose client when one is installed (the engine does
not run on this machine kind), and structurally what the README promises either way."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BACKEND = ROOT / "docker" / "backend.Dockerfile"
FRONTEND = ROOT / "docker" / "frontend.Dockerfile"


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose` (the standalone client), whichever works here."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        if subprocess.run([*command, "version"], capture_output=True, timeout=60).returncode == 0:
            return command
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_validates() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client here (neither the docker compose plugin nor docker-compose)")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_backend_service(compose: dict[str, Any]) -> None:
    backend = compose["services"]["backend"]
    assert backend["build"] == {"context": ".", "dockerfile": "docker/backend.Dockerfile"}
    assert "./checkpoints:/app/checkpoints:ro" in backend["volumes"]
    assert backend["environment"]["FLAM_CHECKPOINTS"] == "/app/checkpoints"
    assert "http://127.0.0.1:8000/health" in " ".join(backend["healthcheck"]["test"])
    assert "driver: nvidia" in COMPOSE.read_text()  # the optional GPU reservation is documented


def test_frontend_service_waits_for_a_healthy_backend(compose: dict[str, Any]) -> None:
    frontend = compose["services"]["frontend"]
    assert frontend["depends_on"] == {"backend": {"condition": "service_healthy"}}
    assert frontend["command"][:4] == ["flam", "ui", "--api", "http://backend:8000"]
    assert "/healthz" in " ".join(frontend["healthcheck"]["test"])


def test_images_install_like_the_makefile() -> None:
    backend = BACKEND.read_text()
    assert re.search(r"^RUN make install\b", backend, re.M), "the backend image must run the Makefile's install"
    assert "TORCH_PIN := torch==2.13.0" in (ROOT / "Makefile").read_text()
    frontend = FRONTEND.read_text()
    assert "torch==" not in frontend and "make install" not in frontend
    assert "python3.11 -m venv .venv" in frontend and "pip install --upgrade --quiet pip" in frontend
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [d for d in project["dependencies"] if not d.startswith("torch")] + project["optional-dependencies"]["ui"]
    assert not any(d.startswith("torch") for d in wanted) and any(d.startswith("gradio") for d in wanted)
    assert "if not d.startswith('torch')" in frontend and "['optional-dependencies']['ui']" in frontend


def test_images_copy_every_package_folder() -> None:
    folders = {v.split("/")[0] for v in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
               ["package-dir"].values()}  # fmt: skip
    for dockerfile in (BACKEND, FRONTEND):
        copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile.read_text(), re.M))
        assert folders <= copied, f"{dockerfile.name} does not copy {sorted(folders - copied)}"
        ignore = Path(f"{dockerfile}.dockerignore").read_text()
        assert all(f"!{folder}/" in ignore for folder in folders)
