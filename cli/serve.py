"""`flam serve`: the REST API (and the Gradio UI under /ui, once the frontend provides it) with uvicorn."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from flam.main import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the models over REST (OpenAPI at /docs) and the studio UI under /ui",
        description="Serve every model under the checkpoints folder. Limits, caches and the device come from FLAM_* "
        "environment variables (see flam/backend/settings.py); the flags below override them.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR", help="model sets folder (default: checkpoints/)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument("--no-ui", action="store_true", help="serve the API alone")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(run=run)


def _check_port(host: str, port: int) -> None:
    """A clear error for a port that is taken, before loading any model."""
    if not 0 < port < 65536:
        raise CliError(f"--port {port}: expected 1..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CliError(f"--host {host}: cannot be resolved ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise CliError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from None


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import uvicorn

    from flam.backend.app import create_app
    from flam.backend.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise CliError(str(error)) from None
    if args.checkpoints is not None:
        if not args.checkpoints.is_dir():
            raise CliError(f"--checkpoints {args.checkpoints}: no such folder")
        settings = replace(settings, checkpoints=args.checkpoints)
    if args.device is not None:
        settings = replace(settings, device=args.device)
    if args.no_ui:
        settings = replace(settings, ui=False)
    _check_port(args.host, args.port)
    api_url = f"http://{args.host}:{args.port}"
    try:
        app = create_app(settings, api_base_url=api_url)
    except SettingsError as error:
        raise CliError(str(error)) from None
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
