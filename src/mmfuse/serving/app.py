"""The HTTP API (FastAPI) and the web page at ``/``.

Safety: uploads are capped (413) while they stream in, images are decoded with a pixel limit
(decompression bombs get 413, undecodable bytes 422, never 500), clients cannot name files,
and every error is JSON: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmfuse.data.images import ImageDecodeError, ImageTooLargeError, open_image
from mmfuse.errors import MmfuseError
from mmfuse.predictor import Predictor
from mmfuse.serving.batcher import MicroBatcher
from mmfuse.serving.engine import InferenceEngine, Item, MissingModalityError

ACCESS = logging.getLogger("mmfuse.access")
MAX_TEXT_CHARS = 10_000
MAX_BATCH_ITEMS = 256
SERVE_MAX_PIXELS = 25_000_000  # 5000 x 5000; stricter than training, a server is exposed


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


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


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    import json

    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def decode_upload(data: bytes, field: str) -> Image.Image:
    try:
        return open_image(data, max_pixels=SERVE_MAX_PIXELS)
    except ImageTooLargeError as error:
        raise ApiError(413, "image_too_large", f"{field}: {error}") from error
    except ImageDecodeError as error:
        raise ApiError(422, "bad_image", f"{field}: not a readable image ({error})") from error


def create_app(
    predictor: Predictor, *, max_upload_bytes: int = 10 * 2**20, max_batch: int = 32,
    max_wait_ms: float = 5.0, timeout_s: float = 30.0, index: str | Path | None = None,
) -> FastAPI:
    """The API around a fitted (or loaded) Predictor; ``index`` enables /v1/search."""
    from mmfuse.retrieval.predictor import RetrievalPredictor

    retrieval = isinstance(predictor, RetrievalPredictor)
    engine = None if retrieval else InferenceEngine(predictor)
    search_index = None
    if index is not None:
        if not retrieval:
            raise MmfuseError("an index is searched with a retrieval model (--task retrieval)")
        from mmfuse.retrieval.index import EmbeddingIndex

        search_index = EmbeddingIndex.load(index)
        predictor.check_index(search_index)
    batcher = MicroBatcher(engine.predict, max_batch, max_wait_ms / 1000) if engine else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title="mmfuse", version="1", lifespan=lifespan,
                  description="Image + text model API. Errors are JSON: {error: {code, message}}.")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        ACCESS.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code,
                    1000 * (time.perf_counter() - started))
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": error.code, "message": error.message}},
                            status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": {"code": "http_error", "message": str(error.detail)}},
                            status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": {"code": "invalid_request", "message": str(error)}},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logging.getLogger("mmfuse.serving").exception("unexpected error")
        return JSONResponse({"error": {"code": "internal", "message": "internal error"}},
                            status_code=500)

    async def read_item(request: Request) -> Item:
        """Multipart (image file + text field) or JSON (base64 image + text)."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            raw = {key: form.get(key) for key in form}
        elif content_type.startswith("application/json"):
            try:
                raw = await request.json()
            except ValueError as error:
                raise ApiError(400, "bad_json", f"the body is not valid JSON ({error})") from error
            if not isinstance(raw, dict):
                raise ApiError(422, "invalid_request", "the JSON body must be an object")
        else:
            raise ApiError(415, "unsupported_media_type",
                           "send multipart/form-data (image file, text field) or JSON")
        return await to_item(raw)

    async def to_item(raw: dict[str, Any]) -> Item:
        assert engine is not None
        aliases = {"image": engine.image_columns[:1], "text": engine.text_columns[:1]}
        known = set(engine.image_columns) | set(engine.text_columns) | set(aliases)
        unknown = set(raw) - known
        if unknown:
            raise ApiError(422, "unknown_field",
                           f"unknown field(s) {sorted(unknown)}; this model takes "
                           f"{sorted(known)}")
        item: Item = {}
        for key, value in raw.items():
            for column in aliases.get(key, [key]):
                if column in engine.image_columns:
                    item[column] = await image_value(value, key)
                else:
                    item[column] = text_value(value, key)
        try:
            engine.check(item)
        except MissingModalityError as error:
            raise ApiError(422, "missing_modality", str(error)) from error
        return item

    async def image_value(value: Any, field: str) -> Image.Image | None:
        if value is None or value == "":
            return None
        if hasattr(value, "read"):  # an uploaded file
            data = await value.read()
        elif isinstance(value, str):
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ApiError(422, "bad_image", f"{field}: not valid base64") from error
        else:
            raise ApiError(422, "invalid_request",
                           f"{field}: send a file (multipart) or a base64 string (JSON)")
        return await asyncio.to_thread(decode_upload, data, field)

    def text_value(value: Any, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(422, "invalid_request", f"{field}: must be a string")
        if len(value) > MAX_TEXT_CHARS:
            raise ApiError(413, "text_too_long", f"{field}: over {MAX_TEXT_CHARS} characters")
        return value.strip() or None

    async def run(item: Item) -> dict[str, Any]:
        assert batcher is not None
        try:
            return await asyncio.wait_for(batcher.submit(item), timeout_s)
        except TimeoutError as error:
            raise ApiError(504, "timeout", f"no answer within {timeout_s:.0f} s") from error

    def require_classifier() -> None:
        if engine is None:
            raise ApiError(404, "not_supported", "this is a retrieval model: use /v1/search")

    predict_body = {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "format": "binary"}, "text": {"type": "string"}}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "description": "base64"}, "text": {"type": "string"}}}},
    }}}

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        if engine is None:
            return {"task": "retrieval", "index": search_index is not None and {
                "kind": search_index.kind, "count": len(search_index.items)}}
        card = engine.card
        return {"task": card.task, "labels": card.labels, "image_fields": card.image_columns,
                "text_fields": card.text_columns, "accepts_missing": card.accepts_missing,
                **card.description}

    @app.post("/v1/predict", openapi_extra=predict_body)
    async def predict(request: Request) -> dict[str, Any]:
        """One prediction: multipart `image` file + `text` field, or JSON with base64 image."""
        require_classifier()
        return await run(await read_item(request))

    @app.post("/v1/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        """JSON ``{"items": [{"image": base64, "text": ...}, ...]}``."""
        require_classifier()
        try:
            body = await request.json()
        except ValueError as error:
            raise ApiError(400, "bad_json", "the body is not valid JSON") from error
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ApiError(422, "invalid_request", 'send {"items": [{...}, ...]}')
        if len(items) > MAX_BATCH_ITEMS:
            raise ApiError(413, "too_many_items", f"at most {MAX_BATCH_ITEMS} items per request")
        parsed = []
        for number, raw in enumerate(items):
            if not isinstance(raw, dict):
                raise ApiError(422, "invalid_request", f"items[{number}] must be an object")
            try:
                parsed.append(await to_item(raw))
            except ApiError as error:
                raise ApiError(error.status, error.code, f"items[{number}]: {error.message}") from error
        results = await asyncio.gather(*(run(item) for item in parsed))
        return {"predictions": list(results)}

    @app.post("/v1/explain", openapi_extra=predict_body)
    async def explain(request: Request) -> dict[str, Any]:
        """The prediction with each modality's contribution (fusion weights and ablation)."""
        require_classifier()
        assert engine is not None
        item = await read_item(request)
        return await asyncio.wait_for(asyncio.to_thread(engine.explain, item), timeout_s)

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        """JSON ``{"text": "...", "top": 5}`` (or ``"image": base64``) against the index."""
        if search_index is None:
            raise ApiError(404, "not_supported",
                           "no index is served; start with `mmfuse serve RUN --index PATH`")
        try:
            body = await request.json()
        except ValueError as error:
            raise ApiError(400, "bad_json", "the body is not valid JSON") from error
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "the JSON body must be an object")
        top = body.get("top", 5)
        if not isinstance(top, int) or not 1 <= top <= 100:
            raise ApiError(422, "invalid_request", "top must be an integer from 1 to 100")
        text, image = body.get("text"), body.get("image")
        if (text is None) == (image is None):
            raise ApiError(422, "invalid_request", "send either text or image")
        if text is not None:
            query = await asyncio.to_thread(predictor.embed_texts, [text_value(text, "text") or "?"])
        else:
            decoded = await image_value(image, "image")
            query = await asyncio.to_thread(_embed_image, predictor, decoded)
        hits = search_index.search(query, top)[0]
        positions = {item: i for i, item in enumerate(search_index.items)}
        return {"results": [
            {"rank": rank, "score": score, "id": positions[item],
             **({"url": f"/v1/items/{positions[item]}"} if search_index.kind == "image"
                else {"text": item})}
            for rank, (item, score) in enumerate(hits, 1)]}

    @app.get("/v1/items/{number}")
    async def item_file(number: int) -> FileResponse:
        """An indexed image, by its position in the index (the only files ever served)."""
        if search_index is None or search_index.kind != "image":
            raise ApiError(404, "not_found", "no image index is served")
        if not 0 <= number < len(search_index.items):
            raise ApiError(404, "not_found", f"no item {number}")
        return FileResponse(search_index.items[number])

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("mmfuse.serving").joinpath("page.html").read_text()

    return app


def _embed_image(predictor: Any, image: Image.Image | None):
    import torch

    encoder = predictor.model_.encoders["image"]
    with torch.inference_mode():
        pixels = encoder.prepare([encoder.transform(image)])
        return predictor.model_.embed("image", pixels | {"present": torch.tensor([True])})
