"""The HTTP error contract: every error is JSON ``{"error": {"code": ..., "message": ...}}``;
bodies are capped while they stream in; uploaded images are decoded under a pixel limit."""

from __future__ import annotations

import hmac
import json
import logging
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmfuse.data.images import ImageDecodeError, ImageTooLargeError, open_image

SERVE_MAX_PIXELS = 25_000_000  # 5000 x 5000; stricter than training, a server is exposed


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answers JSON; unexpected ones are logged and answered 500 without detail."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.code, error.message), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # its headers too: a 405 names the allowed methods (``Allow``, RFC 9110)
        return JSONResponse(error_body("http_error", str(error.detail)),
                            status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", str(error)), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logging.getLogger("mmfuse.serving").exception("unexpected error")
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes as they stream in, whatever Content-Length says."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_json(send, 413, "too_large", self._message())
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "too_large", self._message())
            return message

        try:
            await self.app(scope, limited, send)
        except ApiError as error:
            await _send_json(send, error.status, error.code, error.message)

    def _message(self) -> str:
        return f"the request body is over the {self.limit / 2**20:.1f} MiB upload limit"


class BearerKey:
    """Answer 401 unless ``Authorization: Bearer <key>`` (compared in constant time), on every
    path but ``open_paths``."""

    def __init__(self, app: ASGIApp, key: str, open_paths: frozenset[str]) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _send_json(send, 401, "unauthorized",
                                 "send the server's API key: Authorization: Bearer <key>",
                                 [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, code: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def decode_upload(data: bytes, field: str) -> Image.Image:
    try:
        return open_image(data, max_pixels=SERVE_MAX_PIXELS)
    except ImageTooLargeError as error:
        raise ApiError(413, "image_too_large", f"{field}: {error}") from error
    except ImageDecodeError as error:
        raise ApiError(422, "bad_image", f"{field}: not a readable image ({error})") from error


async def json_object(request: Request, shape: str = "") -> dict:
    """The request's JSON body, which must be an object (``shape``: what it looks like, for
    the error)."""
    try:
        body = await request.json()
    except RecursionError as error:  # the decoder recurses once per level of nesting
        raise ApiError(400, "bad_json", "the JSON body is nested too deeply") from error
    except ValueError as error:
        raise ApiError(400, "bad_json", f"the body is not valid JSON ({error})") from error
    if not isinstance(body, dict):
        hint = f": {shape}" if shape else ""
        raise ApiError(422, "invalid_request", f"the JSON body must be an object{hint}")
    return body


Body = TypeVar("Body", bound=BaseModel)


def validated(schema: type[Body], body: dict) -> Body:
    """``body`` checked against a pydantic schema; a 422 naming each bad field otherwise."""
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                             for e in error.errors())
        raise ApiError(422, "invalid_request", f"{problems} (fields: "
                       f"{', '.join(schema.model_fields)})") from error
