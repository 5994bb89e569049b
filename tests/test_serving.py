"""The HTTP API on loopback, good and bad requests; the web page in a real headless Chromium;
ONNX export parity."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import shutil

import httpx
import numpy as np
import pytest
from conftest import Server, make_captions, make_rows
from PIL import Image
from test_predictor import pretrained_config

from mmfuse import EncoderConfig, Predictor
from mmfuse.errors import MmfuseError
from mmfuse.serving.app import create_app
from mmfuse.serving.export import export_onnx


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    make_rows(folder, 160, seed=0).to_csv(folder / "train.csv", index=False)
    config = pretrained_config(folder, epochs=15)
    config.train.modality_dropout = 0.2
    predictor = Predictor(config).fit(folder / "train.csv")
    strict = copy.copy(predictor)
    strict.config = copy.deepcopy(predictor.config)
    strict.config.train.modality_dropout = 0.0
    with Server(create_app(predictor, max_upload_bytes=300_000)) as url, \
            Server(create_app(strict)) as strict_url:
        yield {"url": url, "strict": strict_url, "folder": folder, "predictor": predictor}


def png(colour: str = "red", size: int = 32) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (size, size), "white")
    image.paste({"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}[colour],
                (4, 4, 20, 20))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_health_model_and_openapi(served) -> None:
    assert httpx.get(f"{served['url']}/v1/health").json() == {"status": "ok"}
    card = httpx.get(f"{served['url']}/v1/model").json()
    assert card["task"] == "classification" and card["labels"] == ["no", "yes"]
    assert card["image_fields"] == ["image"] and card["text_fields"] == ["caption"]
    assert card["fusion"] == "weighted" and card["accepts_missing"] is True
    paths = httpx.get(f"{served['url']}/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/explain"} <= set(paths)
    assert "/v1/search" not in paths  # a classifier does not search, and says so:
    refused = httpx.post(f"{served['url']}/v1/search", json={"text": "red"})
    assert refused.status_code == 404 and "retrieval model" in refused.json()["error"]["message"]


def test_predict_multipart_json_and_batch_agree(served) -> None:
    url = served["url"]
    multipart = httpx.post(f"{url}/v1/predict", files={"image": ("x.png", png("red"))},
                           data={"text": "is the square red?"}).json()
    assert multipart["prediction"] == "yes"
    assert sum(multipart["probabilities"].values()) == pytest.approx(1.0)
    assert set(multipart["modality_weights"]) == {"caption", "image"}
    as_json = httpx.post(f"{url}/v1/predict", json={
        "image": base64.b64encode(png("red")).decode(), "caption": "is the square red?"}).json()
    assert as_json["probabilities"] == pytest.approx(multipart["probabilities"], abs=1e-6)
    batch = httpx.post(f"{url}/v1/predict/batch", json={"items": [
        {"image": base64.b64encode(png("red")).decode(), "text": "is the square red?"},
        {"image": base64.b64encode(png("blue")).decode(), "text": "is the square red?"},
    ]}).json()["predictions"]
    assert [p["prediction"] for p in batch] == ["yes", "no"]
    assert batch[0]["probabilities"] == pytest.approx(multipart["probabilities"], abs=1e-5)


def test_explain_gives_modality_shares(served) -> None:
    body = httpx.post(f"{served['url']}/v1/explain", files={"image": ("x.png", png("blue"))},
                      data={"text": "is the square blue?"}).json()
    assert body["prediction"] == "yes"
    assert sum(body["ablation_shares"].values()) == pytest.approx(1.0)


def test_missing_modality_answered_only_when_the_model_learned_it(served) -> None:
    only_image = {"files": {"image": ("x.png", png())}}
    assert httpx.post(f"{served['url']}/v1/predict", **only_image).status_code == 200
    body = assert_error(httpx.post(f"{served['strict']}/v1/predict", **only_image), 422,
                        "missing_modality")
    assert "--modality-dropout" in body["error"]["message"]
    assert_error(httpx.post(f"{served['url']}/v1/predict", files={"nothing": ("a", b"")}), 422,
                 "unknown_field")


def test_bad_requests_get_clear_4xx_never_5xx(served) -> None:
    url = f"{served['url']}/v1/predict"
    text = {"text": "is the square red?"}
    big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "PNG")  # ~480 kB: over this server's 300 kB limit
    assert_error(httpx.post(url, files={"image": ("big.png", buffer.getvalue())}, data=text), 413,
                 "too_large")
    bad = assert_error(httpx.post(url, files={"image": ("x.txt", b"hello, not an image")},
                                  data=text), 422, "bad_image")
    assert "object at 0x" not in bad["error"]["message"]  # the field and the problem only
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpeg, "JPEG")
    assert_error(httpx.post(url, files={"image": ("t.jpg", jpeg.getvalue()[:200])}, data=text),
                 422, "bad_image")
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 M pixels in ~10 kB
    assert_error(httpx.post(url, files={"image": ("bomb.png", bomb.getvalue())}, data=text), 413,
                 "image_too_large")
    assert_error(httpx.post(url, json={"text": 5, "image": base64.b64encode(png()).decode()}),
                 422, "invalid_request")
    assert_error(httpx.post(url, json={"image": "%%% not base64", "text": "x"}), 422, "bad_image")
    assert_error(httpx.post(url, content=b"{broken", headers={"content-type": "application/json"}),
                 400, "bad_json")
    assert_error(httpx.post(url, content=b"hi", headers={"content-type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(httpx.post(url, json={}), 422, "missing_modality")
    assert_error(httpx.post(f"{served['url']}/v1/predict/batch", json={"items": []}), 422,
                 "invalid_request")
    assert_error(httpx.post(f"{served['url']}/v1/search", json={"text": "x"}), 404,
                 "not_supported")
    assert_error(httpx.get(f"{served['url']}/v1/items/0"), 404, "not_found")
    assert httpx.get(f"{served['url']}/v1/nowhere").status_code == 404


def test_search_endpoint_serves_only_indexed_images(tmp_path) -> None:
    from mmfuse.retrieval.predictor import RetrievalPredictor, list_images

    make_captions(tmp_path, seed=0, per_concept=1).to_csv(tmp_path / "c.csv", index=False)
    config = pretrained_config(tmp_path, epochs=20)
    config.data.task = "retrieval"
    model = RetrievalPredictor(config).fit(tmp_path / "c.csv", run_dir=tmp_path / "run")
    model.index_images(list_images(tmp_path / "shapes")).save(tmp_path / "index")
    with Server(create_app(model, index=tmp_path / "index")) as url:
        hits = httpx.post(f"{url}/v1/search", json={"text": "a big red circle", "top": 3}).json()
        assert len(hits["results"]) == 3 and hits["results"][0]["rank"] == 1
        image = httpx.get(f"{url}{hits['results'][0]['url']}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert_error(httpx.get(f"{url}/v1/items/999"), 404, "not_found")
        assert_error(httpx.post(f"{url}/v1/predict", json={"text": "x"}), 404, "not_supported")
        for body in ({"text": "x", "top": 0}, {"text": "x", "top": True},
                     {"text": "x", "colour": "red"}, {"text": 5}):
            assert_error(httpx.post(f"{url}/v1/search", json=body), 422, "invalid_request")
        deep = "[" * 100_000 + "]" * 100_000
        assert_error(httpx.post(f"{url}/v1/search", content=deep,
                                headers={"content-type": "application/json"}), 400, "bad_json")


def headless_chrome(tmp_path):
    """Debian's chromium, driven headless on loopback (fails in CI when it is missing)."""
    if shutil.which("chromedriver") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium-driver is not installed; .ci/run installs it")
        pytest.skip("chromium-driver is not installed (apt-get install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_web_page_in_a_real_browser(served, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = tmp_path / "blue.png"
    picture.write_bytes(png("blue"))
    driver = headless_chrome(tmp_path)
    try:
        driver.get(served["url"] + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "fusion weighted" in d.find_element(By.ID, "card").text)
        driver.find_element(By.ID, "image").send_keys(str(picture))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drop img"))
        driver.find_element(By.ID, "text").send_keys("is the square blue?")
        driver.find_element(By.ID, "predict").click()
        wait.until(lambda d: d.find_element(By.ID, "prediction").text not in ("", "–"))
        assert driver.find_element(By.ID, "prediction").text == "yes"
        bars = driver.find_elements(By.CSS_SELECTOR, "#probabilities .bar span:first-child")
        labels = [bar.text for bar in bars]
        assert labels == ["yes", "no"]
        shares = driver.find_elements(By.CSS_SELECTOR, "#contributions .bar")
        assert len(shares) == 2
        # an error is shown, not thrown: no text and no image
        driver.find_element(By.ID, "text").clear()
        driver.execute_script("chosen = null;")
        driver.find_element(By.ID, "predict").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "neither an image nor a text" in driver.find_element(By.ID, "error").text
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
        assert pixels.std() > 20 and pixels[:40].mean() < 80  # rendered, dark header on top
    finally:
        driver.quit()


def onnx_probabilities(path, predictor: Predictor, rows) -> np.ndarray:
    """onnxruntime fed as the README documents: pixels of the encoder's transform, the text
    encoder's ``prepare`` output (independent of the exporter's own input path)."""
    import onnxruntime

    from mmfuse.data.images import open_image

    feed = {}
    for m in predictor.model_.modalities:
        encoder = predictor.model_.encoder_for(m)
        if encoder.kind == "image":
            paths = [str(rows.attrs["base_dir"] / p) for p in rows[m]]
            feed[f"{m}.pixels"] = np.stack([encoder.transform(open_image(p)).numpy() for p in paths])
        else:
            feed |= {f"{m}.{k}": v.numpy() for k, v in encoder.prepare(list(rows[m])).items()}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], feed)[0]


def test_onnx_export_matches_predict_of_the_saved_model(served, tmp_path) -> None:
    served["predictor"].save(tmp_path / "run")
    rows = make_rows(tmp_path, 40, seed=3)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = export_onnx(Predictor.load(tmp_path / "run"), tmp_path / "model.onnx",
                         tmp_path / "rows.csv")
    assert result["max_abs_difference"] < 1e-4 and result["checked_rows"] == 32
    assert result["inputs"] == ["caption.input_ids", "caption.attention_mask", "image.pixels"]
    # The reference is a model loaded untouched from the folder, on all 40 real rows, in
    # float32 as the graph computes; the default fast path (text in bfloat16 where the CPU
    # has bfloat16 units) stays close to it.
    from mmfuse.encoders import fast_path

    untouched = Predictor.load(tmp_path / "run")
    with fast_path.disabled():
        expected = untouched.predict_proba(tmp_path / "rows.csv").to_numpy()
    rows.attrs["base_dir"] = tmp_path
    actual = onnx_probabilities(tmp_path / "model.onnx", untouched, rows)
    assert np.abs(actual - expected).max() < 1e-4
    fast = Predictor.load(tmp_path / "run").predict_proba(tmp_path / "rows.csv").to_numpy()
    assert np.abs(actual - fast).max() < 2e-3


def test_export_refuses_what_onnx_cannot_express(tmp_path, tiny_csv, monkeypatch) -> None:
    """An encoder that says ONNX cannot express it is refused in its own sentence, in a
    network and in an ensemble's fold models alike."""
    from conftest import tiny_config

    from mmfuse.encoders.text.gru import GRUTextEncoder
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.ensemble.networks import NetworkMember

    monkeypatch.setattr(GRUTextEncoder, "not_exportable", "the gru cannot be exported here")
    predictor = Predictor(tiny_config(tmp_path)).fit(tiny_csv)  # a GRU text encoder
    with pytest.raises(MmfuseError, match="the gru cannot be exported here"):
        export_onnx(predictor, tmp_path / "x.onnx", tiny_csv)
    ensemble = EnsembleModel(predictor.config, predictor.classes_,
                             [NetworkMember("net", [predictor.fitted_])], "selection",
                             np.ones(1))
    with pytest.raises(MmfuseError, match="the gru cannot be exported here"):
        export_onnx(Predictor.of(ensemble), tmp_path / "e.onnx", tiny_csv)


def test_onnx_export_of_an_ngram_text_model(tmp_path, tiny_csv) -> None:
    from conftest import tiny_config

    config = tiny_config(tmp_path, fusion="concat")
    config.model.text_encoder = EncoderConfig("ngram", options={"dim": 8, "buckets": 512})
    predictor = Predictor(config).fit(tiny_csv)
    result = export_onnx(predictor, tmp_path / "ngram.onnx", tiny_csv)
    assert result["max_abs_difference"] < 1e-4
    assert result["inputs"] == ["caption.ngram_ids", "caption.ngram_weights", "image.pixels"]


def test_one_bad_request_never_fails_its_neighbours(served) -> None:
    """A lone surrogate is refused on its own (422); the 15 valid requests sent at the same
    moment, batched together, all get their answers."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"{served['url']}/v1/predict"
    image = base64.b64encode(png("red")).decode()
    bodies = [{"image": image, "text": "is the square red?"}] * 15
    bodies.insert(7, {"image": image, "text": "red \ud800 square"})
    def post(body: dict) -> httpx.Response:  # json.dumps escapes the surrogate: "\\ud800"
        return httpx.post(url, content=json.dumps(body), timeout=60,
                          headers={"content-type": "application/json"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, bodies))
    assert [r.status_code for r in responses] == [200] * 7 + [422] + [200] * 8
    assert_error(responses[7], 422, "bad_text")
    for route in ("/v1/predict", "/v1/predict/batch", "/v1/explain"):
        deep = "{\"items\": " + "[" * 100_000 + "]" * 100_000 + "}"
        assert_error(httpx.post(f"{served['url']}{route}", content=deep,
                                headers={"content-type": "application/json"}), 400, "bad_json")


def test_a_long_text_is_refused_alike_over_json_and_multipart(served) -> None:
    url = f"{served['strict']}/v1/predict"  # the default 10 MiB body limit
    text = "red " * 500_000  # 2 MB: over the text limit, under the body limit
    image = png("red")
    assert_error(httpx.post(url, json={"image": base64.b64encode(image).decode(), "text": text}),
                 422, "text_too_long")
    assert_error(httpx.post(url, files={"image": ("x.png", image)}, data={"text": text}), 422,
                 "text_too_long")


def test_the_micro_batcher_retries_a_failed_batch_one_by_one_and_times_out() -> None:
    import asyncio

    from mmfuse.serving.batcher import MicroBatcher

    calls: list[list[str]] = []

    def model(items: list[str]) -> list[str]:
        calls.append(items)
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    async def scenario() -> list:
        batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in ["a", "bad", "c"]),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert results[0] == "A" and results[2] == "C" and isinstance(results[1], ValueError)
    assert calls[0] == ["a", "bad", "c"] and sorted(map(tuple, calls[1:])) == [
        ("a",), ("bad",), ("c",)]


def test_a_slow_model_answers_504(served) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(served["predictor"], timeout_s=1e-6)) as client:
        response = client.post("/v1/predict", json={
            "image": base64.b64encode(png()).decode(), "text": "is the square red?"})
    assert_error(response, 504, "timeout")


def test_inputs_a_model_does_not_read_are_named_as_ignored(tmp_path, tiny_csv) -> None:
    from conftest import tiny_config
    from fastapi.testclient import TestClient

    config = tiny_config(tmp_path)
    config.model.modalities = ["text"]
    config.model.text_encoder = EncoderConfig("ngram", options={"dim": 8, "buckets": 512})
    config.train.epochs = 1
    predictor = Predictor(config).fit(tiny_csv)
    with TestClient(create_app(predictor)) as client:
        answered = client.post("/v1/predict", json={
            "image": base64.b64encode(png()).decode(), "text": "is the square red?"})
        plain = client.post("/v1/predict", json={"text": "is the square red?"})
    assert answered.status_code == 200 and answered.json()["ignored"] == ["image"]
    assert "ignored" not in plain.json()
    assert answered.json()["probabilities"] == plain.json()["probabilities"]


def test_an_api_key_keeps_strangers_out(served) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from mmfuse.cli import app

    with TestClient(create_app(served["predictor"], api_key="s3cret-key")) as client:
        assert client.get("/v1/health").status_code == 200
        assert client.get("/").status_code == 200  # the page asks for the key itself
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-key"}):
            response = client.get("/v1/model", headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/v1/predict", json={"text": "x"}), 401, "unauthorized")
        contract = client.get("/openapi.json")  # the contract is public; no data is
        assert contract.status_code == 200
        assert contract.json()["components"]["securitySchemes"] == {
            "bearer": {"type": "http", "scheme": "bearer"}}
        assert contract.json()["paths"]["/v1/model"]["get"]["security"] == [{"bearer": []}]
        good = client.get("/v1/model", headers={"authorization": "Bearer s3cret-key"})
        assert good.status_code == 200 and good.json()["task"] == "classification"
    refused = CliRunner().invoke(app, ["serve", str(served["folder"]), "--host", "0.0.0.0"],
                                 env={"MMFUSE_API_KEY": ""})
    assert refused.exit_code == 2 and "--insecure" in refused.output
