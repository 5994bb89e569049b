"""Request bodies -> model inputs: multipart (image file + text field) or JSON (base64 image)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from fastapi import Request
from PIL import Image

from mmfuse.data.photos import MAX_PHOTOS
from mmfuse.data.tabular import as_number
from mmfuse.serving.engine import InferenceEngine, Item, MissingModalityError
from mmfuse.serving.protocol import ApiError, decode_upload, json_object

MAX_TEXT_CHARS = 10_000


async def image_value(value: Any, field: str, raw_text: bool = False
                      ) -> Image.Image | list[Image.Image] | None:
    """A decoded image from an uploaded file or a base64 string; several photos of one item
    from a list of them (JSON) or repeated parts (multipart); None when empty. ``raw_text``
    (multipart): a part sent without a filename arrives as text; where it is not base64,
    its bytes are the image's (the form parser decoded them as UTF-8, else as Latin-1)."""
    if isinstance(value, list):
        if len(value) > MAX_PHOTOS:
            raise ApiError(422, "invalid_request", f"{field}: {len(value)} photos; at most "
                           f"{MAX_PHOTOS} are read")
        images = [image for i, v in enumerate(value)
                  if (image := await image_value(v, f"{field}[{i}]", raw_text)) is not None]
        return images if len(images) > 1 else (images[0] if images else None)
    if value is None or value == "":
        return None
    if hasattr(value, "read"):  # an uploaded file
        data = await value.read()
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            if not raw_text:
                raise ApiError(422, "bad_image", f"{field}: not valid base64") from error
            data = part_bytes(value)
    else:
        raise ApiError(422, "invalid_request",
                       f"{field}: send a file (multipart) or a base64 string (JSON)")
    return await asyncio.to_thread(decode_upload, data, field)


def part_bytes(text: str) -> bytes:
    """The bytes of a multipart part the form parser decoded to text (Latin-1 maps every
    byte to one character, and back; UTF-8 where it decoded as that)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def cell_value(value: Any, field: str, numeric: bool) -> str | float | None:
    """A number (JSON number or text) or a category (its text); None when empty."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | None):
        raise ApiError(422, "invalid_request", f"{field}: must be a number or a string")
    if not numeric:
        return text_value(str(value) if value is not None else None, field)
    try:
        return as_number(value)
    except ValueError as error:
        raise ApiError(422, "invalid_request", f"{field}: {error} (send a number, or "
                       "nothing for a missing value)") from error


def text_value(value: Any, field: str) -> str | None:
    """A stripped text; None when empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"{field}: must be a string")
    if len(value) > MAX_TEXT_CHARS:
        # 422, not 413: a field's own limit (in the contract), not the body's size
        raise ApiError(422, "text_too_long", f"{field}: over {MAX_TEXT_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate ("\ud800"): no tokenizer takes it
        raise ApiError(422, "bad_text", f"{field}: not valid Unicode (a lone surrogate at "
                       f"character {error.start})") from error
    return value.strip() or None


class ItemReader:
    """Reads one item (a row of model inputs) for ``engine``'s model from a request."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine
        self.aliases = {"image": engine.image_columns[:1], "text": engine.text_columns[:1]}
        self.known = (set(engine.image_columns) | set(engine.text_columns)
                      | set(engine.tabular_columns) | set(self.aliases))

    async def read(self, request: Request) -> tuple[Item, list[str]]:
        content_type = request.headers.get("content-type", "")
        multipart = content_type.startswith("multipart/form-data")
        if multipart:
            # Starlette caps each text part at 1 MiB with a 400 of its own; the body limit
            # (413) already caps the whole request, and texts answer as over JSON (413).
            form = await request.form(max_part_size=2**62)
            # a repeated part (several photos of one item) arrives as a list
            raw = {key: values if len(values := form.getlist(key)) > 1 else values[0]
                   for key in form}
        elif content_type.startswith("application/json"):
            raw = await json_object(request)
        else:
            raise ApiError(415, "unsupported_media_type",
                           "send multipart/form-data (image file, text field) or JSON")
        return await self.item(raw, multipart)

    async def item(self, raw: dict[str, Any], multipart: bool = False
                   ) -> tuple[Item, list[str]]:
        """The item, and the fields sent that this model does not read (answered as
        ``"ignored"``: e.g. an image sent to a model of texts alone)."""
        unknown = set(raw) - self.known
        if unknown:
            raise ApiError(422, "unknown_field",
                           f"unknown field(s) {sorted(unknown)}; this model takes "
                           f"{sorted(self.known)}")
        for alias, columns in self.aliases.items():
            if columns and alias != columns[0] and alias in raw and columns[0] in raw:
                raise ApiError(422, "invalid_request", f"'{alias}' stands for '{columns[0]}': "
                               "send one of them")
        item: Item = {}
        ignored = sorted(key for key, value in raw.items() if key in self.aliases
                         and not self.aliases[key] and value not in (None, ""))
        for key, value in raw.items():
            for column in self.aliases.get(key, [key]):
                if column in self.engine.image_columns:
                    item[column] = await image_value(value, key, raw_text=multipart)
                elif column in self.engine.tabular_columns:
                    item[column] = cell_value(value, key,
                                              column in self.engine.config.data.num_cols)
                else:
                    item[column] = text_value(value, key)
        try:
            self.engine.check(item)
        except MissingModalityError as error:
            raise ApiError(422, "missing_modality", str(error)) from error
        return item, ignored
