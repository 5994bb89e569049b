"""/v1/search and /v1/items/N for a retrieval model serving an index."""

from __future__ import annotations

import asyncio
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from mmfuse.retrieval.index import EmbeddingIndex
from mmfuse.retrieval.predictor import RetrievalPredictor
from mmfuse.serving.inputs import image_value, text_value
from mmfuse.serving.protocol import ApiError, json_object, validated


class SearchBody(BaseModel):
    """What /v1/search reads; any other field is refused, as on /v1/predict."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    image: StrictStr | None = Field(None, description="base64")
    top: StrictInt | StrictFloat = Field(5, ge=1, le=100)

    @field_validator("top")
    @classmethod
    def whole(cls, top: int | float) -> int:
        """A whole number, as JSON writes it (``10`` or ``10.0``)."""
        if not float(top).is_integer():
            raise ValueError("must be a whole number")
        return int(top)


def search_routes(model: RetrievalPredictor, index: EmbeddingIndex | None) -> APIRouter:
    router = APIRouter()

    def require_index() -> EmbeddingIndex:
        if index is None:
            raise ApiError(404, "not_supported",
                           "no index is served; start with `mmfuse serve RUN --index PATH`")
        return index

    @router.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        return {"task": "retrieval", "index": index is not None and {
            "kind": index.kind, "count": len(index.items)}}

    @router.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        """JSON ``{"text": "...", "top": 5}`` (or ``"image": base64``) against the index."""
        served = require_index()
        body = validated(SearchBody, await json_object(request))
        top, text, image = body.top, body.text, body.image
        if (text is None) == (image is None):
            raise ApiError(422, "invalid_request", "send either text or image")
        if text is not None:
            query = await asyncio.to_thread(model.embed_texts, [text_value(text, "text") or "?"])
        else:
            query = await asyncio.to_thread(embed_image, model, await image_value(image, "image"))
        hits = served.search(query, top)[0]
        positions = {item: i for i, item in enumerate(served.items)}
        return {"results": [
            {"rank": rank, "score": score, "id": positions[item],
             **({"url": f"/v1/items/{positions[item]}"} if served.kind == "image"
                else {"text": item})}
            for rank, (item, score) in enumerate(hits, 1)]}

    @router.get("/v1/items/{number}")
    async def item_file(number: int) -> FileResponse:
        """An indexed image, by its position in the index (the only files ever served)."""
        if index is None or index.kind != "image":
            raise ApiError(404, "not_found", "no image index is served")
        if not 0 <= number < len(index.items):
            raise ApiError(404, "not_found", f"no item {number}")
        return FileResponse(index.items[number])

    return router


def not_searching_routes() -> APIRouter:
    """What a predicting model answers on the search route: what search needs."""
    router = APIRouter()

    @router.post("/v1/search", include_in_schema=False)
    async def refuse() -> None:
        raise ApiError(404, "not_supported", "search needs a retrieval model served with "
                                             "`mmfuse serve RUN --index PATH`")

    @router.get("/v1/items/{number}", include_in_schema=False)
    async def no_items(number: int) -> None:
        raise ApiError(404, "not_found", "no image index is served")

    return router


def embed_image(model: RetrievalPredictor, image: Image.Image | None) -> torch.Tensor:
    """(1, E) unit vector of a decoded image."""
    encoder = model.model_.encoders["image"]
    with torch.inference_mode():
        pixels = encoder.prepare([encoder.transform(image)])
        return model.model_.embed("image", pixels | {"present": torch.tensor([True])})
