"""A model card per run (RUN/README.md): written by `mmfuse train`, rewritten by evaluate,
robustness and report, its figures those of the run folder's JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import make_rows
from test_cli import TINY, cli


def table(card: str, heading: str) -> dict[str, list[str]]:
    """A Markdown table's rows under ``heading``: first cell -> the others."""
    section = card.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("|") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_a_trained_run_has_a_card_whose_figures_are_its_files(tmp_path: Path,
                                                             tiny_csv: Path) -> None:
    run = tmp_path / "run"
    test = tmp_path / "test.csv"
    make_rows(tmp_path, 30, seed=5).to_csv(test, index=False)
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--epochs", "1",
                       "--fusion", "concat", "--test-data", str(test), *TINY)
    assert code == 0, output
    card = (run / "README.md").read_text()
    assert "mmfuse train" in card and str(tiny_csv) in card  # the command and the data
    frame = pd.read_csv(tiny_csv)
    assert f"Trained on {len(frame):,} rows" in card
    shares = table(card, "Data")
    for label, count in frame["label"].value_counts().items():
        assert shares[label] == [f"{count / len(frame):.2%}"]
    validation = json.loads((run / "metrics.json").read_text())["validation"]
    tested = json.loads((run / "test_metrics.json").read_text())
    metrics = table(card, "Metrics")
    for name in ("accuracy", "macro_f1", "ece"):
        assert metrics[name][:2] == [f"{validation[name]:.4f}", f"{tested[name]:.4f}"]

    code, output = cli("evaluate", str(run), "--data", str(test))
    assert code == 0, output
    evaluated = json.loads((run / "evaluation.json").read_text())
    metrics = table((run / "README.md").read_text(), "Metrics")
    assert metrics["macro_f1"][2] == f"{evaluated['macro_f1']:.4f}"
    code, output = cli("robustness", str(run), "--data", str(test), "--severities", "1")
    assert code == 0, output
    robust = json.loads((run / "robustness.json").read_text())
    assert f"Clean {robust['metric']}: {robust['clean']:.4f}." in (run / "README.md").read_text()
    code, output = cli("report", str(run), "--data", str(test), "--severities", "1",
                       "--explain-rows", "1", "--out", str(tmp_path / "report.html"))
    assert code == 0, output
    page = (tmp_path / "report.html").read_text()
    assert "<section class='card'><h1>Model card: run</h1>" in page  # the card comes first
    assert f"<td>{evaluated['macro_f1']:.4f}</td>" in page


def test_a_card_says_when_auto_mode_read_a_sample_of_the_rows(tmp_path: Path,
                                                             tiny_csv: Path) -> None:
    """Where encoding every row would not fit the limit, the candidates read a sample: the
    card says so in the plan's own words (the figures are the leaderboard's)."""
    from mmfuse.evaluation.model_card import write_card

    run = tmp_path / "run"
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--epochs", "1",
                       "--fusion", "concat", *TINY)
    assert code == 0, output
    metrics = json.loads((run / "metrics.json").read_text())
    note = "the candidates read 600 of the 1,000 rows (every class kept)"
    metrics["auto"] = {"preset": "medium", "chosen": "concat", "time_limit_s": 180.0,
                       "frozen_features_s": 70.0, "rows_read": 600, "encoding": note}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert f"**Trained on a sample**: {note}." in write_card(run).read_text()
