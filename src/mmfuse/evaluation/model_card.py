"""A model card per run: ``RUN/README.md``, what a person keeps beside the model and hands to
a reviewer. Written by ``mmfuse train`` and rewritten by ``evaluate``, ``robustness`` and
``report`` from the run folder's own files (``metrics.json``, ``evaluation.json``,
``test_metrics.json``, ``robustness.json``, ``leaderboard.json``, ``meta.json``, and
``card.json``: the data summary and command ``train`` recorded), so every figure in it is one
of theirs, rounded to four decimals.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.config import Config
from mmfuse.io import atomic_write_text
from mmfuse.model_folder import (
    CARD_FACTS_FILE,
    CARD_FILE,
    EVALUATION_FILE,
    LEADERBOARD_FILE,
    ROBUSTNESS_FILE,
    TEST_METRICS_FILE,
    ModelFolder,
)

SHOWN_METRICS = ("accuracy", "macro_f1", "micro_f1", "f1", "auroc", "ece", "subset_accuracy",
                 "rmse", "mae", "r2", "loss")
TOP_LABELS = 15  # label shares listed; the rest summed
TOP_CANDIDATES = 5  # leaderboard rows shown


def data_facts(frame: pd.DataFrame, config: Config, source: str) -> dict[str, Any]:
    """What the card says of the training table ``frame`` (as read from ``source``, before
    validation): rows, the columns read by kind, label shares, missing cells, text scripts."""
    data = config.data
    columns = {"image": data.image_cols, "text": data.text_cols, "numeric": data.num_cols,
               "categorical": data.cat_cols}
    facts: dict[str, Any] = {"source": source, "rows": len(frame),
                             "columns": {k: list(v) for k, v in columns.items() if v}}
    read = [c for cs in columns.values() for c in cs if c in frame]
    empty = {c: frame[c].isna() | (frame[c].astype(str).str.strip() == "") for c in read}
    facts["missing_cells"] = {c: int(cells.sum()) for c, cells in empty.items() if cells.any()}
    if data.label_col in frame and data.task != "retrieval":
        labels = frame[data.label_col].dropna().astype(str)
        if data.task == "multilabel":
            labels = pd.Series([part for cell in labels for part in cell.split(data.label_sep)
                                if part])
        if data.task == "regression":
            values = pd.to_numeric(labels, errors="coerce").dropna()
            facts["target"] = {"mean": float(values.mean()), "std": float(values.std()),
                               "min": float(values.min()), "max": float(values.max())}
        else:
            facts["label_shares"] = {k: round(v / len(labels), 4) for k, v in
                                     Counter(labels).most_common()}
    texts = [t for c in data.text_cols if c in frame for t in frame[c].dropna().astype(str)]
    facts["text_scripts"] = scripts(texts)
    return facts


def scripts(texts: list[str], sample: int = 2000) -> dict[str, float]:
    """The writing systems of the texts' letters (Latin, Cyrillic, Han, ...), as shares."""
    counts: Counter[str] = Counter()
    for text in texts[:sample]:
        for char in text:
            if char.isalpha():
                counts[unicodedata.name(char, "UNKNOWN").split(" ")[0]] += 1
    total = sum(counts.values()) or 1
    return {name.title(): round(n / total, 3) for name, n in counts.most_common(5)}


def refresh_card(run: str | Path) -> Path | None:
    """Rewrite the card of a model folder (a run of ``mmfuse train``, or a saved model);
    None for what is not one (``hf:DIR``)."""
    if not ModelFolder(run).exists():
        return None
    return write_card(run)


def write_card(run: str | Path) -> Path:
    """Write (or rewrite) ``run/README.md`` from the run folder's files; returns its path."""
    folder = ModelFolder(run)
    atomic_write_text(folder.path / CARD_FILE, card(folder))
    return folder.path / CARD_FILE


def card(folder: ModelFolder) -> str:
    """The card's Markdown."""
    definition = folder.definition()
    config, facts = definition.config, folder.optional(CARD_FACTS_FILE) or {}
    meta = folder.optional("meta.json") or {}
    sections = [
        f"# Model card: {folder.path.resolve().name}\n",
        f"A **{config.data.task}** model reading {_columns_sentence(config)}. "
        f"Made by mmfuse {meta.get('mmfuse_version', '?')}; this card is rewritten by "
        "`mmfuse train`, `evaluate`, `robustness` and `report` from this folder's files.\n",
        _data(facts, definition.classes),
        _model(folder, meta),
        _metrics(folder),
        _robustness(folder.optional(ROBUSTNESS_FILE)),
        _limits(config, facts),
        _versions(meta, facts),
    ]
    return "\n".join(s for s in sections if s)


def _columns_sentence(config: Config) -> str:
    data = config.data
    parts = [f"{kind} {', '.join(f'`{c}`' for c in cols)}" for kind, cols in
             (("images", data.image_cols), ("texts", data.text_cols),
              ("numbers", data.num_cols), ("categories", data.cat_cols)) if cols]
    return "; ".join(parts) or "its inputs"


def _data(facts: dict[str, Any], classes: list[str] | None) -> str:
    if not facts:
        return "## Data\n\nNot recorded (the model was not trained by `mmfuse train`).\n"
    if "rows" not in facts:
        return f"## Data\n\nTrained on `{facts['source']}` (tar shards: not summarised).\n"
    lines = ["## Data\n", f"- Trained on {facts['rows']:,} rows of `{facts['source']}`."]
    for kind, columns in facts.get("columns", {}).items():
        lines.append(f"- {kind.title()} columns: {', '.join(f'`{c}`' for c in columns)}.")
    for column, count in facts.get("missing_cells", {}).items():
        lines.append(f"- `{column}`: {count:,} missing or empty cells.")
    if facts.get("text_scripts"):
        lines.append("- Scripts of the texts' letters: " + ", ".join(
            f"{name} {share:.1%}" for name, share in facts["text_scripts"].items()) + ".")
    if "target" in facts:
        target = facts["target"]
        lines.append(f"- Target: mean {target['mean']:.4f}, standard deviation "
                     f"{target['std']:.4f}, from {target['min']:.4f} to {target['max']:.4f}.")
    shares = facts.get("label_shares", {})
    if shares:
        lines += ["", "| label | share of rows |", "| --- | --- |"]
        lines += [f"| {label} | {share:.2%} |" for label, share in list(shares.items())[:TOP_LABELS]]
        rest = list(shares.values())[TOP_LABELS:]
        if rest:
            lines.append(f"| {len(rest)} more | {sum(rest):.2%} |")
    if classes is not None:
        lines.append(f"\n{len(classes)} classes.")
    return "\n".join(lines) + "\n"


def _model(folder: ModelFolder, meta: dict[str, Any]) -> str:
    metrics = folder.metrics()
    lines = ["## Model\n"]
    auto = metrics.get("auto")
    if auto:
        lines.append(f"Chosen by auto mode (preset {auto['preset']}, {auto['time_limit_s']:.0f} s "
                     f"limit): **{auto['chosen']}**.")
        if auto.get("rows_read"):  # a large table on a cold cache (auto/frozen_features.py)
            lines.append(f"**Trained on a sample**: {auto['encoding']}.")
    encoders = meta.get("encoders") or {}
    if encoders:
        lines.append("Encoders: " + ", ".join(f"{k} `{v}`" for k, v in encoders.items()) + ".")
    board = folder.optional(LEADERBOARD_FILE)
    if board and board.get("rows"):
        scored = [r for r in board["rows"] if r.get("val_metric") is not None
                  and not r.get("member")][:TOP_CANDIDATES]
        lines += ["", f"Top of the leaderboard ({board['metric']}, judged out of fold):", "",
                  "| candidate | score | chosen |", "| --- | --- | --- |"]
        lines += [f"| {r['candidate']} | {r['val_metric']:.4f} | {'yes' if r.get('chosen') else ''} |"
                  for r in scored]
    return "\n".join(lines) + "\n"


def _metrics(folder: ModelFolder) -> str:
    columns = {"validation": (folder.metrics() or {}).get("validation") or {}}
    for name, file in (("test", TEST_METRICS_FILE), ("evaluation", EVALUATION_FILE)):
        found = folder.optional(file)
        if found:
            columns[name] = found
    shown = [m for m in SHOWN_METRICS if any(isinstance(c.get(m), int | float)
                                             for c in columns.values())]
    if not shown:
        return ""
    lines = ["## Metrics\n", "| metric | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for metric in shown:
        cells = [f"{c[metric]:.4f}" if isinstance(c.get(metric), int | float) else ""
                 for c in columns.values()]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append("\n`ece`: expected calibration error of the top label (0 is perfectly "
                 "calibrated). Validation: the rows training held out; test: `--test-data`; "
                 "evaluation: the last `mmfuse evaluate`.")
    return "\n".join(lines) + "\n"


def _robustness(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    lines = ["## Robustness\n", f"Clean {result['metric']}: {result['clean']:.4f}."]
    if "summary" in result:
        lines.append(f"Mean under corruption ÷ clean: {result['summary']:.4f}.")
    worst = [(f"{kind}: {name}", min(curve.values())) for kind, curves in
             result.get("corruptions", {}).items() for name, curve in curves.items()]
    if worst:
        name, value = min(worst, key=lambda pair: pair[1])
        lines.append(f"Worst corruption: {name}, {value:.4f} at its harshest.")
    for name, value in result.get("ablation", {}).items():
        lines.append(f"{name}: {value:.4f}.")
    return "\n".join(lines) + "\n"


def _limits(config: Config, facts: dict[str, Any]) -> str:
    data = config.data
    lines = ["## Intended use and known limits\n",
             f"- For {data.task} of rows shaped like the training table: "
             f"{_columns_sentence(config)}."]
    if facts.get("text_scripts"):
        lines.append("- It read texts written in " + ", ".join(facts["text_scripts"]) +
                     "; texts in other scripts are outside what it saw.")
    if data.allow_missing:
        lines.append("- A row may lack a modality: a learned placeholder stands in for it "
                     "(see the robustness section for what that costs).")
    else:
        lines.append("- Every row must have every input: a row missing an image or a text is "
                     "reported as a bad row and left out (train with `--allow-missing` to "
                     "accept such rows).")
    shares = facts.get("label_shares", {})
    rare = [label for label, share in shares.items() if share * facts.get("rows", 0) < 10]
    if rare:
        lines.append(f"- Fewer than 10 training rows: {', '.join(rare[:10])}"
                     f"{' and more' if len(rare) > 10 else ''}; expect weak predictions there.")
    lines.append("- Not checked for fairness across groups of people; review before any use "
                 "that affects someone.")
    return "\n".join(lines) + "\n"


def _versions(meta: dict[str, Any], facts: dict[str, Any]) -> str:
    lines = ["## Versions and command\n",
             f"- mmfuse {meta.get('mmfuse_version', '?')}, torch {meta.get('torch_version', '?')}, "
             f"Python {meta.get('python_version', '?')}."]
    if facts.get("command"):
        lines.append(f"- Trained with: `{facts['command']}`")
    if facts.get("created_at"):
        lines.append(f"- At {facts['created_at']}.")
    return "\n".join(lines) + "\n"
