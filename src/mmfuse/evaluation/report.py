"""One self-contained HTML page (PNG figures embedded) with the JSON behind it."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.evaluation import plots
from mmfuse.evaluation.explain import explain, explanation_figure
from mmfuse.evaluation.model_card import card as model_card
from mmfuse.evaluation.profile import profile
from mmfuse.evaluation.robustness import robustness
from mmfuse.io import atomic_write_text, write_json
from mmfuse.model_folder import ModelFolder
from mmfuse.predictor import Data, Predictor
from mmfuse.scoring import top_label_reliability
from mmfuse.tasks import get_task, selection_metric

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;
color:#1f2937}
header{background:#111827;color:#fff;padding:28px 40px}header h1{margin:0 0 6px;font-size:26px}
header p{margin:0;color:#9ca3af}main{max-width:1180px;margin:0 auto;padding:24px 40px 60px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:20px 24px;
margin:18px 0}h2{margin:0 0 12px;font-size:18px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 150px;background:#f9fafb;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px}
.card .v{font-size:24px;font-weight:650}.card .k{font-size:12px;color:#6b7280;text-transform:uppercase}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:5px 12px;text-align:right;
border-bottom:1px solid #eee}th:first-child,td:first-child{text-align:left}th{background:#f9fafb}
img{max-width:100%}.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.note{color:#6b7280;font-size:13px}.bad{color:#b91c1c}.good{color:#15803d}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card(label: str, value: str) -> str:
    return (f'<div class="card"><div class="k">{html.escape(label)}</div>'
            f'<div class="v">{value}</div></div>')


def build_report(
    predictor: Predictor, data: Data, out: str | Path, *, base_dir: str | Path | None = None,
    run_dir: str | Path | None = None, explain_rows: int = 4, severities: tuple[int, ...] = (1, 3, 5),
    max_rows: int | None = 2000, seed: int = 0,
) -> dict[str, Any]:
    """Evaluate, stress, profile and explain; write ``out`` (HTML) and ``out`` + ``.json``."""
    get_task(predictor.config.data.task).require_predictions("build a report")
    out = Path(out)
    rows = predictor.read(data, base_dir=base_dir)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed).reset_index(drop=True)
    task = predictor.config.data.task
    metrics = predictor.evaluate_rows(rows)
    report: dict[str, Any] = {"task": task, "rows": len(rows), "metrics": metrics,
                              "config": predictor.config.to_dict()}
    trained = predictor.metrics_
    for key in ("privacy", "auto"):  # how the model was made: DP budget, auto-mode choice
        if key in trained:
            report[key] = trained[key]
    report["robustness"] = robustness(predictor, rows, severities=severities, seed=seed,
                                      max_rows=None)
    report["efficiency"] = profile(predictor, rows, run_dir=run_dir, repeats=10)
    if get_task(task).single_label:
        scores = predictor.outputs(rows)[0]
        truth = predictor.targets(rows).numpy()
        report["calibration"] = top_label_reliability(scores, truth)
    examples = explain(predictor, _examples(predictor, rows, explain_rows))
    report["explanations"] = [{k: v for k, v in e.items() if k != "heatmaps"} for e in examples]
    write_json(out.with_suffix(out.suffix + ".json"), report)
    card = model_card(ModelFolder(run_dir)) if run_dir is not None and ModelFolder(
        run_dir).exists() else None
    atomic_write_text(out, _render(predictor, report, examples, card))
    return report


def _examples(predictor: Predictor, rows: pd.DataFrame, count: int) -> pd.DataFrame:
    """Rows worth explaining: distinct first images, mistakes first (up to half)."""
    image_col = predictor.config.data.image_cols[0] if predictor.config.data.image_cols else None
    distinct = rows.drop_duplicates(image_col) if image_col in rows else rows
    if predictor.classes_ is None or "_target" not in distinct:
        return distinct.head(count)
    predicted = predictor.outputs(distinct)[1]
    truth = predictor.targets(distinct).numpy()
    wrong = (predicted != truth).reshape(len(distinct), -1).any(axis=1)
    mistakes = distinct[wrong].head(count // 2)
    chosen = pd.concat([mistakes, distinct[~wrong].head(count - len(mistakes))])
    chosen.attrs = dict(rows.attrs)
    return chosen


def _render(predictor: Predictor, report: dict[str, Any], examples: list[dict],
            card: str | None) -> str:
    """``card``: the run's model card (Markdown), shown first, as it stood before this
    report."""
    title = (f"{report['task']} · {', '.join(predictor.modality_kinds_)} · "
             f"{predictor.describe()}")
    parts = [_card_section(card), _summary(report), _training(predictor, report), _errors(predictor, report),
             _robustness(report["robustness"]), _efficiency(report["efficiency"]),
             _calibration(report), _explained(examples)]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mmfuse report</title>"
            f"<style>{CSS}</style></head><body><header><h1>mmfuse model report</h1>"
            f"<p>{html.escape(title)}</p></header><main>{''.join(parts)}</main></body></html>")


def _card_section(card: str | None) -> str:
    if card is None:
        return ""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(card)
    return f"<section class='card'>{body}</section>"


def _summary(report: dict[str, Any]) -> str:
    metrics, robust = report["metrics"], report["robustness"]
    cards = [_card(k.replace("_", " "), f"{metrics[k]:.3f}")
             for k in ("accuracy", "macro_f1", "auroc", "ece", "rmse", "r2") if k in metrics]
    if "summary" in robust:
        cards.append(_card("robustness (corrupted ÷ clean)", f"{robust['summary']:.2f}"))
    notes = [f"{report['rows']:,} labelled rows."]
    if "privacy" in report:
        privacy = report["privacy"]
        cards.append(_card("differential privacy",
                           f"ε {privacy['epsilon']:.2f}, δ {privacy['delta']:.0e}"))
        notes.append(
            f"Trained with DP-SGD: the weights are (ε = {privacy['epsilon']:.2f}, "
            f"δ = {privacy['delta']:.0e})-differentially private with respect to each training "
            f"row (noise multiplier {privacy['noise_multiplier']:.2f}, per-example gradients "
            f"clipped to {privacy['max_grad_norm']}, {privacy['steps']} steps, RDP accountant). "
            "Validation rows are not covered.")
    efficiency = report["efficiency"]
    batch1 = efficiency["latency"]["batch_1"]["raw"]
    cards.append(_card("latency, 1 row", f"{batch1['p50_ms']:.0f} ms"))
    cards.append(_card("parameters", f"{efficiency['total_parameters'] / 1e6:.1f} M"))
    if "auto" in report:
        notes.append(f"Chosen by auto mode (preset {html.escape(report['auto']['preset'])}): "
                     f"{html.escape(report['auto']['chosen'])}; see <code>mmfuse leaderboard</code>.")
    return (f"<section><h2>Summary</h2><div class='cards'>{''.join(cards)}</div>"
            + "".join(f"<p class='note'>{note}</p>" for note in notes) + "</section>")


def _training(predictor: Predictor, report: dict[str, Any]) -> str:
    if not predictor.history_:
        return ""
    metric = selection_metric(predictor.config)
    curves = _img(plots.training_curves(predictor.history_, metric), "training curves")
    return f"<section><h2>Training</h2>{curves}</section>"


def _errors(predictor: Predictor, report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    if "confusion_matrix" not in metrics:
        return ""
    per_class = [[name, v["precision"], v["recall"], v["f1"], v["support"]]
                 for name, v in metrics["per_class"].items()]
    matrix = _img(plots.confusion_matrix(metrics["confusion_matrix"], predictor.classes_),
                  "confusion matrix")
    return ("<section><h2>Errors by class</h2><div class='row'>"
            f"<div>{matrix}</div>"
            f"<div>{_table(['class', 'precision', 'recall', 'F1', 'support'], per_class)}</div>"
            "</div></section>")


def _robustness(robust: dict[str, Any]) -> str:
    both = robust["ablation"]["both present"]
    ablation_rows = [[name, value, value - both] for name, value in robust["ablation"].items()]
    corruption_rows = [[f"{kind}: {name.replace('_', ' ')}", *curve.values()]
                       for kind, curves in robust["corruptions"].items()
                       for name, curve in curves.items()]
    severities = [f"severity {s}" for s in robust["severities"]]
    return (
        f"<section><h2>Robustness ({html.escape(robust['metric'])})</h2>"
        f"{_img(plots.robustness_curves(robust), 'robustness curves')}"
        f"<div class='row'><div><h3>Corruptions</h3>"
        f"{_table(['corruption', *severities], corruption_rows)}"
        f"<p class='note'>clean: {robust['clean']:.4f}</p></div>"
        f"<div><h3>Missing modalities</h3>{_table(['input', robust['metric'], 'change'], ablation_rows)}"
        "<p class='note'>A modality 'missing' means every one of its cells is empty; models "
        "trained with --modality-dropout degrade least.</p></div></div></section>")


def _efficiency(efficiency: dict[str, Any]) -> str:
    latency_rows = [[f"{size.replace('_', ' ')}, {mode}", f"{values['p50_ms']:.1f}",
                     f"{values['p95_ms']:.1f}", f"{values['rows_per_second']:,.0f}"]
                    for size, modes in efficiency["latency"].items()
                    for mode, values in modes.items() if values]
    parameter_rows = [[name, c["trainable"], c["frozen"]]
                      for name, c in efficiency["parameters"].items()]
    sizes = [["peak memory (RSS)", f"{efficiency['peak_rss_mb']:.0f} MB"]]
    if efficiency.get("checkpoint_mb") is not None:
        sizes.append(["checkpoint on disk", f"{efficiency['checkpoint_mb']:.2f} MB"])
    if "epoch_seconds" in efficiency:
        epochs = efficiency["epoch_seconds"]
        sizes.append(["training epoch (first / mean)",
                      f"{epochs['first']:.1f} s / {epochs['mean']:.1f} s"])
    return ("<section><h2>Efficiency</h2><div class='row'>"
            f"<div>{_table(['latency', 'p50 ms', 'p95 ms', 'rows/s'], latency_rows)}"
            "<p class='note'>raw: from image files and texts; cached: from the feature cache "
            f"(frozen encoders). {efficiency['threads']} threads.</p></div>"
            f"<div>{_table(['component', 'trainable', 'frozen'], parameter_rows)}</div>"
            f"<div>{_table(['', ''], sizes)}</div></div></section>")


def _calibration(report: dict[str, Any]) -> str:
    if "calibration" not in report:
        return ""
    calibration = report["calibration"]
    diagram = _img(plots.reliability_diagram(calibration["bins"], calibration["ece"]),
                   "reliability diagram")
    return (f"<section><h2>Calibration</h2>{diagram}"
            "<p class='note'>Fit a temperature on validation data with "
            "<code>mmfuse train --calibrate</code>.</p></section>")


def _explained(examples: list[dict]) -> str:
    figures = "".join(
        _img(explanation_figure(e, {m: np.asarray(h) for m, h in e["heatmaps"].items()}),
             f"explanation of row {e['row']}") for e in examples)
    return f"<section><h2>Explained examples</h2>{figures}</section>"
