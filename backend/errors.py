"""API errors: one JSON shape, {"error": "<what is wrong and how to fix it>", ...}, and never a traceback or path."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("flam.backend")
MAX_LISTED_ERRORS = 5


class ApiError(Exception):
    """A client-facing error: HTTP status, one-line message, optional extra fields and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    """('body', 'edits', 0, 'delta', 1) -> 'edits[0].delta[1]'."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "literal[", "nullable[")):
            out += f".{part}" if out else part
    return out or (str(loc[0]) if loc else "request")


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def validation_summary(errors: list[dict[str, Any]]) -> tuple[int, str, list[dict[str, str]]]:
    """(status, one-line message, per-field details) for pydantic/FastAPI validation errors."""
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        detail = (json_errors[0].get("ctx") or {}).get("error", "malformed JSON")
        position = json_errors[0].get("loc", (None, None))[-1]
        where = f" at character {position}" if isinstance(position, int) else ""
        return 400, f"the request body is not valid JSON ({detail}{where}); send a JSON object", []
    details = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "missing" and loc == ("body",):
            details.append({"field": "body", "message": "a JSON request body is required"})
        elif loc == ("body",):
            details.append({"field": "body", "message": "send a JSON object (Content-Type: application/json)"})
        else:
            details.append({"field": _location(loc), "message": _message(error)})
    shown = "; ".join(f"{d['field']}: {d['message']}" for d in details[:MAX_LISTED_ERRORS])
    more = f" (and {len(details) - MAX_LISTED_ERRORS} more)" if len(details) > MAX_LISTED_ERRORS else ""
    return 422, shown + more, details


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can raise becomes {"error": ...}; unexpected ones are logged, not shown."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers, **error.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message, details = validation_summary(list(error.errors()))
        return error_response(status, message, details=details) if details else error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        messages = {404: f"no such endpoint: {request.url.path} (see /docs)", 405: "method not allowed here"}
        message = messages.get(error.status_code, str(error.detail))
        return error_response(error.status_code, message, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (logged on the server); please report it")
