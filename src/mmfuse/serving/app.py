"""The HTTP API (FastAPI) and the web page at ``/``.

Safety: uploads are capped (413) while they stream in, images are decoded with a pixel limit
(decompression bombs get 413, undecodable bytes 422, never 500), clients cannot name files,
and every error is JSON: ``{"error": {"code": ..., "message": ...}}`` (``protocol.py``).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from mmfuse.errors import MmfuseError
from mmfuse.estimator import Estimator
from mmfuse.retrieval.index import EmbeddingIndex
from mmfuse.retrieval.predictor import RetrievalPredictor
from mmfuse.serving.batcher import MicroBatcher
from mmfuse.serving.engine import InferenceEngine
from mmfuse.serving.openapi import contract
from mmfuse.serving.predict_routes import not_predicting_routes, predict_routes
from mmfuse.serving.protocol import BearerKey, BodyLimit, install_error_handlers
from mmfuse.serving.search_routes import not_searching_routes, search_routes

ACCESS = logging.getLogger("mmfuse.access")
# no data: the page asks for the key; the contract (OpenAPI) names the fields, not the data
OPEN_PATHS = frozenset({"/v1/health", "/", "/favicon.ico", "/openapi.json", "/docs"})


def create_app(
    model: Estimator, *, max_upload_bytes: int = 10 * 2**20, max_batch: int = 32,
    max_wait_ms: float = 5.0, timeout_s: float = 30.0, index: str | Path | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The API around a fitted (or loaded) model; ``index`` enables /v1/search. With
    ``api_key``, every route but the health check and the (static) page needs
    ``Authorization: Bearer <api_key>``."""
    batcher, engine = None, None
    if isinstance(model, RetrievalPredictor):
        served = EmbeddingIndex.load(index) if index is not None else None
        if served is not None:
            model.check_index(served)
        routes = [search_routes(model, served), not_predicting_routes()]
    else:
        if index is not None:
            raise MmfuseError("an index is searched with a retrieval model (--task retrieval)")
        engine = InferenceEngine(model)
        batcher = MicroBatcher(engine.predict, max_batch, max_wait_ms / 1000)
        routes = [predict_routes(engine, batcher, timeout_s), not_searching_routes()]

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
    if api_key:
        app.add_middleware(BearerKey, key=api_key, open_paths=OPEN_PATHS)
    install_error_handlers(app)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        ACCESS.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code,
                    1000 * (time.perf_counter() - started))
        return response

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    for router in routes:
        app.include_router(router)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app, engine=engine, secured=bool(api_key),
                                          open_paths=OPEN_PATHS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("mmfuse.serving").joinpath("page.html").read_text()

    return app
