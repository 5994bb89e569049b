"""Every command on every task: it works (its output file is there) or refuses in one clear
sentence. Never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import clip_folder, make_captions, make_rows, tiny_config, vit_folder
from typer.testing import CliRunner

from mmfuse import EncoderConfig, Predictor
from mmfuse.cli import app
from mmfuse.retrieval.predictor import RetrievalPredictor

TASKS = ("classification", "multilabel", "binary", "regression", "matching", "retrieval")
# every task's model, an auto-mode ensemble, and both on a whole table: numbers, categories,
# several photos in some cells, row weights; a local Hugging Face vision folder as the image
# encoder, and a retrieval model fine-tuned from a CLIP-style folder (--backbone)
KINDS = (*TASKS, "ensemble", "table", "table-ensemble", "hf-image", "clip-retrieval")
# the task each kind that is not a task trains
KIND_TASK = {"ensemble": "classification", "table": "classification",
             "table-ensemble": "classification", "hf-image": "classification",
             "clip-retrieval": "retrieval"}
# What a task cannot do, and the sentence that says so.
REFUSALS = {
    ("retrieval", "predict"): "ranks, it does not classify",
    ("retrieval", "explain"): "ranks, it does not classify",
    ("retrieval", "export"): "ranks, it does not classify",
    ("retrieval", "report"): "ranks, it does not classify",
    **{("clip-retrieval", command): "ranks, it does not classify"
       for command in ("predict", "explain", "export", "report")},
}


def task_table(folder: Path, task: str):
    """A small table in the shape the task reads: labels per task; pairs for matching/retrieval."""
    if task in ("matching", "retrieval"):
        return make_captions(folder, seed=0, per_concept=1).drop(columns="colour")
    frame = make_rows(folder, 48, seed=0)
    if task == "classification":
        frame["label"] = [["red", "green", "blue"][i % 3] for i in range(len(frame))]
    elif task == "multilabel":
        frame["label"] = ["a|b", "b", "a", "c|a"] * (len(frame) // 4)
    elif task == "regression":
        frame["label"] = [float(i % 7) for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """One tiny trained run per task: (run folder, its manifest)."""
    made = {"ensemble": ensemble_run(tmp_path_factory.mktemp("ensemble")),
            **table_runs(tmp_path_factory.mktemp("table")),
            **backbone_runs(tmp_path_factory.mktemp("backbones"))}
    for task in TASKS:
        folder = tmp_path_factory.mktemp(task)
        task_table(folder, task).to_csv(folder / "data.csv", index=False)
        cfg = tiny_config(folder, fusion="concat")
        cfg.model.text_encoder = EncoderConfig("ngram", options={"dim": 8, "buckets": 512})
        cfg.data.task, cfg.train.epochs = task, 1
        estimator = RetrievalPredictor if task == "retrieval" else Predictor
        estimator(cfg).fit(folder / "data.csv", run_dir=folder / "run")
        made[task] = (folder / "run", folder / "data.csv")
    return made


def ensemble_run(folder: Path) -> tuple[Path, Path]:
    """An auto-mode ensemble on a classification table: linear members and a network
    bagged over two folds."""
    import numpy as np

    from mmfuse.data.rows import read_rows
    from mmfuse.ensemble.inputs import View
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.ensemble.networks import NetworkMember
    from mmfuse.features.cache import FeatureCache

    task_table(folder, "classification").to_csv(folder / "data.csv", index=False)
    cfg = tiny_config(folder)
    rows = read_rows(folder / "data.csv", cfg, folder)
    halves = np.arange(len(rows)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    views = [View("tfidf-word"), View("image", EncoderConfig("efficientnet-lite0",
                                                             image_size=32))]
    linear, _ = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(folder / "cache"))
    network = tiny_config(folder, fusion="concat")
    network.train.epochs = 1
    bagged = NetworkMember("concat", [
        Predictor(network).fit(rows.iloc[fit], rows.iloc[held], classes=linear.classes).fitted_
        for fit, held in folds])
    members = [*linear.members, bagged]
    weights = np.full(len(members), 1 / len(members))
    EnsembleModel(cfg, linear.classes, members, "selection", weights,
                  encoders=linear.encoders).save(folder / "run")
    return folder / "run", folder / "data.csv"


def whole_table(folder: Path):
    """Classification rows with a price, a brand (some missing), row weights and, in every
    fourth row, two photos in the image cell."""
    frame = task_table(folder, "classification")
    frame["price"] = [("" if i % 9 == 0 else f"{1.5 * i:.1f}") for i in range(len(frame))]
    frame["brand"] = [("" if i % 7 == 0 else "abc"[i % 3]) for i in range(len(frame))]
    frame["w"] = [1.0 + i % 3 for i in range(len(frame))]
    frame["image"] = [f"{image};{frame['image'][(i + 1) % len(frame)]}" if i % 4 == 0 else image
                      for i, image in enumerate(frame["image"])]
    return frame


def table_runs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """A network with the tabular tower and an ensemble with tabular members, on one table."""
    import numpy as np

    from mmfuse.data.rows import read_rows
    from mmfuse.ensemble.inputs import View
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.features.cache import FeatureCache

    whole_table(folder).to_csv(folder / "data.csv", index=False)
    cfg = tiny_config(folder, fusion="concat")
    cfg.model.text_encoder = EncoderConfig("ngram", options={"dim": 8, "buckets": 512})
    cfg.data.num_cols, cfg.data.cat_cols, cfg.data.weight_col = ["price"], ["brand"], "w"
    cfg.train.epochs = 1
    Predictor(cfg).fit(folder / "data.csv", run_dir=folder / "net")
    rows = read_rows(folder / "data.csv", cfg, folder)
    halves = np.arange(len(rows)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    views = [View("tfidf-word"), View("image", EncoderConfig("efficientnet-lite0",
                                                             image_size=32)),
             View("tabular"), View("tabular-trees")]
    ensemble, _ = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(folder / "cache"))
    ensemble.save(folder / "ensemble")
    return {"table": (folder / "net", folder / "data.csv"),
            "table-ensemble": (folder / "ensemble", folder / "data.csv")}


def backbone_runs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """A classifier reading images through a tiny local ViT folder (frozen), and a retrieval
    model fine-tuned from a tiny CLIP folder (its text tower tuned)."""
    task_table(folder, "classification").to_csv(folder / "data.csv", index=False)
    cfg = tiny_config(folder, fusion="concat")
    cfg.model.image_encoder = EncoderConfig(f"hf:{vit_folder(folder / 'vit')}")
    cfg.model.text_encoder = EncoderConfig("ngram", options={"dim": 8, "buckets": 512})
    cfg.train.epochs = 1
    Predictor(cfg).fit(folder / "data.csv", run_dir=folder / "hf-image")
    task_table(folder, "retrieval").to_csv(folder / "pairs.csv", index=False)
    clip = f"hf:{clip_folder(folder / 'clip')}"
    cfg = tiny_config(folder, fusion="concat")
    cfg.data.task, cfg.train.epochs, cfg.model.backbone = "retrieval", 1, clip
    cfg.model.image_encoder = EncoderConfig(clip)
    cfg.model.text_encoder = EncoderConfig(clip, frozen=False)
    RetrievalPredictor(cfg).fit(folder / "pairs.csv", run_dir=folder / "clip-retrieval")
    return {"hf-image": (folder / "hf-image", folder / "data.csv"),
            "clip-retrieval": (folder / "clip-retrieval", folder / "pairs.csv")}


def command_line(command: str, run: Path, data: Path, out: Path) -> tuple[list[str], Path]:
    """The arguments of ``command`` and the file it must write."""
    lines = {
        "evaluate": (["--data", str(data), "--output", str(out / "e.json")], out / "e.json"),
        "predict": (["--data", str(data), "--output", str(out / "p.csv")], out / "p.csv"),
        "robustness": (["--data", str(data), "--severities", "1", "--output",
                        str(out / "r.json")], out / "r.json"),
        "profile": (["--data", str(data), "--repeats", "2", "--output", str(out / "f.json")],
                    out / "f.json"),
        "explain": (["--data", str(data), "--max-rows", "2", "--steps", "4", "--out",
                     str(out / "x")], out / "x" / "explanations.json"),
        "report": (["--data", str(data), "--severities", "1", "--explain-rows", "1", "--out",
                    str(out / "report.html")], out / "report.html"),
        "export": (["--data", str(data), "--out", str(out / "m.onnx")], out / "m.onnx"),
    }
    arguments, written = lines[command]
    return [command, str(run), *arguments], written


@pytest.mark.parametrize("command", ["evaluate", "predict", "robustness", "profile", "explain",
                                     "report", "export"])
@pytest.mark.parametrize("task", KINDS)
def test_every_command_on_every_task(runs, tmp_path, task, command) -> None:
    run, data = runs[task]
    arguments, written = command_line(command, run, data, tmp_path)
    result = CliRunner().invoke(app, arguments)
    assert "Traceback" not in result.output
    # An exception other than SystemExit is what a user would see as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    refusal = REFUSALS.get((task, command))
    if refusal is None:
        assert result.exit_code == 0, result.output
        assert written.exists() and written.stat().st_size > 0
    else:
        assert result.exit_code != 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert refusal in result.output
        assert not written.exists()


@pytest.mark.parametrize("task", KINDS)
def test_serve_answers_every_task(runs, task) -> None:
    """The HTTP app of each task (and of an ensemble): a prediction with its modality shares,
    or (retrieval) a clear 404 pointing at search."""
    import base64

    from fastapi.testclient import TestClient

    from mmfuse import load
    from mmfuse.serving.app import create_app

    run, data = runs[task]
    table_task = KIND_TASK.get(task, task)
    row = task_table(data.parent, table_task).iloc[0]
    body = {"image": base64.b64encode((data.parent / row["image"]).read_bytes()).decode(),
            "text": row["caption"]}
    if task.startswith("table"):  # two photos, a number and a category by column name
        body |= {"image": [body["image"], body["image"]], "price": 3.5, "brand": "b"}
    with TestClient(create_app(load(run))) as client:
        assert client.get("/v1/model").json()["task"] == table_task
        response = client.post("/v1/predict", json=body)
        explained = client.post("/v1/explain", json=body)
    if table_task == "retrieval":
        assert response.status_code == 404 and "/v1/search" in response.json()["error"]["message"]
    else:
        assert response.status_code == 200, response.text
        assert "prediction" in response.json()
        assert explained.status_code == 200, explained.text
        shares = explained.json()["ablation_shares"]
        expected = {"table": {"image", "caption"},  # the tabular tower is never missing
                    "table-ensemble": {"image", "caption", "price", "brand"}}
        assert set(shares) == expected.get(task, {"image", "caption"})
        assert sum(shares.values()) == pytest.approx(1)


def test_the_command_table_covers_every_registered_task() -> None:
    """A new task must join the tables above (its data shape and what it refuses)."""
    from mmfuse.tasks import TASKS as REGISTERED

    assert set(TASKS) == set(REGISTERED)
