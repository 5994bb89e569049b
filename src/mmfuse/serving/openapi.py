"""The OpenAPI document as the API's contract: the request bodies as the server validates
them (the fields this model reads, by column name, and which it cannot do without), every
status code a route answers with the error body, and the Bearer scheme on protected routes.

A request the document calls valid is answered 2xx; one it calls invalid is refused (4xx).
``tests/test_openapi_contract.py`` holds the server to that with a property-based API tester.
"""

from __future__ import annotations

import base64
import io
import itertools
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from PIL import Image

from mmfuse.data.photos import MAX_PHOTOS
from mmfuse.serving.engine import InferenceEngine
from mmfuse.serving.inputs import MAX_TEXT_CHARS

ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "additionalProperties": False,
                             "properties": {"code": {"type": "string"},
                                            "message": {"type": "string"}}}}}
# Why each status is answered (every route: 500; with a key: 401)
REASONS = {
    400: "The body is not valid JSON (or a multipart body cannot be parsed).",
    401: "No valid API key: send `Authorization: Bearer <key>`.",
    404: "Not served by this model (a retrieval model searches; a predicting one predicts), "
         "or no such item.",
    413: "The body, an image (in pixels), a text or the batch is over its limit.",
    415: "A body that is neither JSON nor multipart/form-data.",
    422: "A field the model does not read, a wrong type, an unreadable image or a missing "
         "input the model cannot do without.",
    500: "An unexpected error (logged; no detail is answered).",
    504: "No answer within the server's timeout.",
}
BODY_ERRORS = (400, 413, 415, 422)
TEXT_LIKE = {"type": "string", "maxLength": MAX_TEXT_CHARS}
NONBLANK = "\\S"  # a text of whitespace alone is an empty (missing) one


def contract(app: FastAPI, *, engine: InferenceEngine | None, secured: bool,
             open_paths: frozenset[str]) -> dict[str, Any]:
    """The app's OpenAPI document, completed (``engine``: the predicting model's, None for
    a retrieval model)."""
    document = get_openapi(title=app.title, version=app.version,
                           description=app.description, routes=app.routes)
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    if secured:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    bodies = request_bodies(engine) if engine is not None else {"/v1/search": SEARCH_BODY}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in bodies:
                operation["requestBody"] = bodies[path]
            codes = [500]
            if secured and path not in open_paths:
                operation["security"] = [{"bearer": []}]
                codes.append(401)
            if method == "post":
                codes += BODY_ERRORS
            elif operation.get("parameters"):  # a path parameter of the wrong type
                codes.append(422)
            if path in ("/v1/predict", "/v1/predict/batch", "/v1/explain"):
                codes.append(504)
            if path.startswith(("/v1/search", "/v1/items")):
                codes.append(404)
            if path.startswith("/v1/items"):  # the indexed image itself
                operation["responses"]["200"] = {"description": "The image file.", "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}}}}
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's own validation schema: ours is Error
            for code in codes:
                responses[str(code)] = {"description": REASONS[code],
                                        "content": {"application/json": {"schema": ERROR}}}
    return document


SEARCH_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {"text": {**TEXT_LIKE, "type": ["string", "null"]},
                   "image": {"type": ["string", "null"], "format": "byte",
                             "contentMediaType": "image/*", "minLength": 4},
                   "top": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5}},
    # exactly one query: a text, or an image
    "oneOf": [{"required": ["text"], "properties": {"text": {"type": "string"},
                                                     "image": {"type": "null"}}},
              {"required": ["image"], "properties": {"image": {"type": "string"},
                                                      "text": {"type": "null"}}}],
    "example": {"text": "a red circle", "top": 5}}}}}


def request_bodies(engine: InferenceEngine) -> dict[str, dict[str, Any]]:
    """The predicting routes' bodies for ``engine``'s model."""
    item_json, item_form = item_schema(engine, "json"), item_schema(engine, "multipart")
    image_fields = [f for f in item_form["properties"] if f in engine.image_columns
                    or f == "image"]
    one = {"required": True, "content": {
        "application/json": {"schema": item_json},
        "multipart/form-data": {"schema": item_form, "encoding": {
            field: {"contentType": "image/png, image/jpeg, image/webp"}
            for field in image_fields}}}}
    batch = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["items"], "additionalProperties": False,
        "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 256,
                                 "items": item_json}},
        "example": {"items": [example_item(engine)]}}}}}
    return {"/v1/predict": one, "/v1/explain": one, "/v1/predict/batch": batch}


def example_item(engine: InferenceEngine) -> dict[str, Any]:
    """A valid item: a tiny PNG (base64, which multipart takes too) and a text per column."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    data = engine.config.data
    return {**dict.fromkeys(engine.image_columns, image),
            **dict.fromkeys(engine.text_columns, "a red circle"),
            **{c: 1.5 if c in data.num_cols else "a" for c in engine.tabular_columns}}


def item_schema(engine: InferenceEngine, media: str) -> dict[str, Any]:
    """One item: a field per column the model reads, ``image`` and ``text`` standing for
    the first image and text column; the inputs a model without missing-modality training
    needs are required (``anyOf`` where an alias may stand in)."""
    data = engine.config.data
    image = ({"type": "string", "format": "binary"} if media == "multipart" else
             {"type": "string", "format": "byte", "contentMediaType": "image/*",
              "description": "base64 of a PNG, JPEG or WebP image"})
    photos = {"type": "array", "minItems": 1, "maxItems": MAX_PHOTOS, "items": image,
              "description": "several photos of one item (a repeated part in multipart)"}
    text: dict[str, Any] = {**TEXT_LIKE, "pattern": NONBLANK}
    if engine.accepts_missing:  # an empty (or null) image or text is a missing one
        image = {**image, "type": ["string", "null"]} if media == "json" else image
        text = {**TEXT_LIKE, "type": ["string", "null"]} if media == "json" else TEXT_LIKE
    else:
        image = {**image, "minLength": 4 if media == "json" else 1}
    number = ({"type": "string", "pattern": "^\\s*-?[0-9]{1,15}(\\.[0-9]{1,6})?\\s*$"}
              if media == "multipart" else {"type": ["number", "null"]})
    category = ({**TEXT_LIKE, "pattern": NONBLANK} if media == "multipart"
                else {"type": ["string", "null"], "maxLength": MAX_TEXT_CHARS})
    properties: dict[str, Any] = {}
    for column in engine.image_columns:
        properties[column] = {"anyOf": [image, photos]}
    for column in engine.text_columns:
        properties[column] = text
    for column in engine.tabular_columns:
        properties[column] = number if column in data.num_cols else category
    aliases = {"image": engine.image_columns[:1], "text": engine.text_columns[:1]}
    for alias, columns in aliases.items():
        if alias not in properties:
            properties[alias] = (dict(properties[columns[0]]) if columns else
                                 {"description": f"ignored: this model has no {alias} input"})
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties, "example": example_item(engine)}
    needed = [(c, [a for a, cs in aliases.items() if cs == [c]])
              for c in engine.image_columns + engine.text_columns]
    if engine.accepts_missing:  # at least one of them present, whichever; not a column
        present = {"image": {"not": {"enum": [None, ""]}},  # and its alias at once
                   "text": {"type": "string", "pattern": NONBLANK}}
        schema["anyOf"] = [
            {"required": [name], "properties": {name: present[
                "image" if column in engine.image_columns else "text"]}}
            for column, names in needed for name in sorted({column, *names})]
        pairs = [[column, *names] for column, names in needed if names and names != [column]]
        if pairs:
            schema["allOf"] = [{"not": {"required": pair}} for pair in pairs]
    else:  # every input: its column or the alias standing for it, not both (one oneOf)
        groups = [sorted({column, *names}) for column, names in needed]
        schema["required"] = [g[0] for g in groups if len(g) == 1]
        choices = [g for g in groups if len(g) > 1]
        if choices:
            schema["oneOf"] = [{"required": list(way)} for way in itertools.product(*choices)]
    return schema
