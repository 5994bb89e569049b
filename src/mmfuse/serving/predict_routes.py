"""/v1/predict, /v1/predict/batch, /v1/explain and /v1/model for models that predict."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from mmfuse.serving.batcher import MicroBatcher
from mmfuse.serving.engine import InferenceEngine, Item
from mmfuse.serving.inputs import ItemReader
from mmfuse.serving.protocol import ApiError, json_object

MAX_BATCH_ITEMS = 256


def predict_routes(engine: InferenceEngine, batcher: MicroBatcher, timeout_s: float) -> APIRouter:
    router = APIRouter()
    reader = ItemReader(engine)

    async def run(item: Item, ignored: list[str]) -> dict[str, Any]:
        try:
            result = await asyncio.wait_for(batcher.submit(item), timeout_s)
        except TimeoutError as error:
            raise ApiError(504, "timeout", f"no answer within {timeout_s:.0f} s") from error
        return {**result, "ignored": ignored} if ignored else result

    @router.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        card = engine.card
        return {"task": card.task, "labels": card.labels, "image_fields": card.image_columns,
                "text_fields": card.text_columns, "tabular_fields": card.tabular_columns,
                "accepts_missing": card.accepts_missing,
                **card.description}

    @router.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """One prediction: multipart `image` file + `text` field, or JSON with base64 image."""
        return await run(*await reader.read(request))

    @router.post("/v1/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        """JSON ``{"items": [{"image": base64, "text": ...}, ...]}``."""
        body = await json_object(request, 'the items go under "items": {"items": [{...}, ...]}')
        if set(body) - {"items"}:
            raise ApiError(422, "unknown_field", f"unknown field(s) {sorted(set(body) - {'items'})}"
                           '; send {"items": [{...}, ...]}')
        items = body.get("items")
        if not isinstance(items, list) or not items:
            raise ApiError(422, "invalid_request", 'send {"items": [{...}, ...]}')
        if len(items) > MAX_BATCH_ITEMS:
            raise ApiError(422, "too_many_items", f"at most {MAX_BATCH_ITEMS} items per request")
        parsed = []
        for number, raw in enumerate(items):
            if not isinstance(raw, dict):
                raise ApiError(422, "invalid_request", f"items[{number}] must be an object")
            try:
                parsed.append(await reader.item(raw))
            except ApiError as error:
                raise ApiError(error.status, error.code, f"items[{number}]: {error.message}") from error
        return {"predictions": list(await asyncio.gather(*(run(*item) for item in parsed)))}

    @router.post("/v1/explain")
    async def explain(request: Request) -> dict[str, Any]:
        """The prediction with each modality's contribution (fusion weights and ablation)."""
        item, ignored = await reader.read(request)
        result = await asyncio.wait_for(asyncio.to_thread(engine.explain, item), timeout_s)
        return {**result, "ignored": ignored} if ignored else result

    return router


def not_predicting_routes() -> APIRouter:
    """What a retrieval model answers on the prediction routes: where to go instead."""
    router = APIRouter()

    @router.post("/v1/predict", include_in_schema=False)
    @router.post("/v1/predict/batch", include_in_schema=False)
    @router.post("/v1/explain", include_in_schema=False)
    async def refuse() -> None:
        raise ApiError(404, "not_supported", "this is a retrieval model: use /v1/search")

    return router
