"""The OpenAPI document is the contract: a property-based API tester (Schemathesis), driven
by ``/openapi.json`` of a served classifier, ensemble and retrieval model (with an index),
with every check on (status codes, the error body, headers such as ``Allow``, schema-valid
requests accepted and schema-violating ones refused), seeded and bounded.

The image fields' contract says "a readable image": the tester draws them from real PNGs.
Its explicit examples and its generated cases run; its coverage phase is left out, because
it builds multipart bodies from ``required`` alone, ignoring the ``oneOf`` that says a column
or the alias standing for it is needed (JSON bodies are judged right either way).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from conftest import Server, make_captions, make_rows, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode

from mmfuse import Predictor
from mmfuse.data.rows import read_rows
from mmfuse.ensemble.inputs import View
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.features.cache import FeatureCache
from mmfuse.retrieval.predictor import RetrievalPredictor
from mmfuse.serving.app import create_app

KEY = "contract-key"
MULTIPART = "multipart/form-data"


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 9), colour).save(buffer, "PNG")
    return buffer.getvalue()


IMAGES = [png(colour) for colour in ("red", "green", "blue")]
schemathesis.openapi.format("byte", st.sampled_from([base64.b64encode(i).decode()
                                                     for i in IMAGES]))
schemathesis.openapi.media_type("image/png", st.sampled_from(IMAGES))


def served_model(kind: str, folder: Path):
    """A tiny model of ``kind`` (and, for retrieval, an index of its images)."""
    make_rows(folder, 48, seed=0).to_csv(folder / "data.csv", index=False)
    cfg = tiny_config(folder, fusion="concat")
    cfg.train.epochs = 1
    if kind == "classifier":  # trained to predict from one modality too: inputs optional
        cfg.train.modality_dropout = 0.3
        return Predictor(cfg).fit(folder / "data.csv"), None
    if kind == "ensemble":
        rows = read_rows(folder / "data.csv", cfg, folder)
        halves = np.arange(len(rows)) % 2
        folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
        model, _ = EnsembleModel.fit(cfg, rows, [View("tfidf-word"), View("tfidf-char")],
                                     folds, FeatureCache(folder / "cache"))
        return Predictor.of(model), None
    pairs = make_captions(folder, seed=0, per_concept=1)
    pairs.to_csv(folder / "pairs.csv", index=False)
    cfg.data.task = "retrieval"
    model = RetrievalPredictor(cfg).fit(folder / "pairs.csv", run_dir=folder / "run")
    paths = [str(folder / p) for p in pairs["image"].unique()]
    model.write_index("image", paths, folder / "index")
    return model, folder / "index"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "ensemble", "retrieval"])
def test_the_api_keeps_its_contract(kind: str, tmp_path: Path) -> None:
    """Every operation of the served model's document: its explicit examples, then cases
    the document calls valid (answered 2xx) and invalid (refused 4xx), every check on."""
    model, index = served_model(kind, tmp_path)
    with Server(create_app(model, api_key=KEY, index=index)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            for strategy in [*operation.get_strategies_from_examples(),
                             operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]:
                check_cases(strategy)
            negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            try:  # JSON bodies: on the multipart wire every field is text, no type is wrong
                check_cases(negative.filter(lambda case: case.media_type != MULTIPART))
            except Unsatisfiable:  # nothing to make invalid (no body, no parameter)
                assert operation.body.is_empty() if hasattr(operation.body, "is_empty") \
                    else not operation.body, operation.label


@schemathesis.auth()
class ApiKey:
    """The server's key on every request (the tester leaves the security header to it)."""

    def get(self, case, context) -> str:
        return KEY

    def set(self, case, data: str, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def check_cases(strategy) -> None:
    @given(strategy)
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def cases(case) -> None:
        case.call_and_validate()

    cases()
