"""`flam ui`: the studio alone, as a client of a FLAM API elsewhere (the docker-compose frontend runs this)."""

from __future__ import annotations

import argparse
from urllib.parse import urlparse

from flam.main import CliError
from flam.serve import _check_port


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve the studio UI alone, talking to a running FLAM API",
        description="Serve the Gradio studio under /ui as a client of the FLAM REST API at --api (no torch here).",
    )
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    api = urlparse(args.api)
    if api.scheme not in ("http", "https") or not api.netloc:
        raise CliError(f"--api {args.api}: expected a URL like http://127.0.0.1:8000")
    _check_port(args.host, args.port)

    import uvicorn

    from flam.frontend.app import create_ui_app

    uvicorn.run(create_ui_app(args.api), host=args.host, port=args.port, log_level=args.log_level)
    return 0
