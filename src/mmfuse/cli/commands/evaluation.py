"""How a trained model holds up and why it decides: robustness, profile, explain, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli.app import Opt, app, friendly, out, writable_file, writable_folder
from mmfuse.cli.render import print_explanations, print_metrics, print_profile, print_robustness
from mmfuse.cli.sources import dataset_or_path
from mmfuse.errors import ConfigError
from mmfuse.evaluation.model_card import refresh_card
from mmfuse.io import write_json
from mmfuse.model_folder import PROFILE_FILE, ROBUSTNESS_FILE


def _severities(text: str) -> tuple[int, ...]:
    values = tuple(int(x) for x in text.split(",") if x.strip())
    if not values or any(v not in range(1, 6) for v in values):
        raise ConfigError("--severities takes numbers from 1 to 5, e.g. 1,3,5")
    return values


@app.command()
@friendly
def robustness(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Labelled manifest, or a built-in split: easy-vqa:test")],
    severities: Annotated[str, Opt(help="Comma-separated, 1 (mild) to 5 (harsh)")] = "1,3,5",
    max_rows: Annotated[int, Opt(help="Evaluate on at most this many rows (sampled)")] = 2000,
    seed: Annotated[int, Opt()] = 0,
    output: Annotated[Path | None, Opt(help="JSON (default RUN/robustness.json)",
                                        callback=writable_file)] = None,
) -> None:
    """Metrics under image/text corruptions at several severities, and with a modality missing."""
    from mmfuse import load
    from mmfuse.evaluation.robustness import robustness as run_robustness

    result = run_robustness(load(run), dataset_or_path(data), seed=seed, max_rows=max_rows,
                            severities=_severities(severities))
    target = output or run / ROBUSTNESS_FILE
    write_json(target, result)
    print_robustness(result)
    out.print(f"written to {target}")
    refresh_card(run)


@app.command()
@friendly
def profile(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Manifest (labels not needed)")],
    repeats: Annotated[int, Opt(help="Timed batches per setting")] = 20,
    output: Annotated[Path | None, Opt(help="JSON (default RUN/profile.json)",
                                        callback=writable_file)] = None,
) -> None:
    """Parameters, latency p50/p95 (batch 1 and 32, with and without the cache), memory."""
    from mmfuse import load
    from mmfuse.evaluation.profile import profile as run_profile

    result = run_profile(load(run), dataset_or_path(data), run_dir=run, repeats=repeats)
    target = output or run / PROFILE_FILE
    write_json(target, result)
    print_profile(result)
    out.print(f"written to {target}")


@app.command()
@friendly
def explain(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Manifest of the rows to explain")],
    out_dir: Annotated[Path, Opt("--out", help="Folder for PNGs and explanations.json",
                                  callback=writable_folder)] = Path(
        "explanations"),
    max_rows: Annotated[int, Opt(help="Explain at most this many rows")] = 8,
    steps: Annotated[int, Opt(help="Integrated Gradients steps")] = 32,
) -> None:
    """Per-example modality shares, image heatmaps and token attributions."""
    from mmfuse import load
    from mmfuse.evaluation.explain import explain as run_explain

    results = run_explain(load(run), dataset_or_path(data), out_dir=out_dir, max_rows=max_rows,
                          steps=steps)
    print_explanations(results)
    out.print(f"{len(results)} explanations in {out_dir}")


@app.command()
@friendly
def report(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Labelled manifest, or a built-in split: easy-vqa:test")],
    out_file: Annotated[Path, Opt("--out", help="HTML file", callback=writable_file)] = Path("report.html"),
    severities: Annotated[str, Opt(help="Comma-separated, 1 to 5")] = "1,3,5",
    max_rows: Annotated[int, Opt(help="Evaluate on at most this many rows (sampled)")] = 2000,
    explain_rows: Annotated[int, Opt(help="Explained examples shown")] = 4,
) -> None:
    """Everything above in one self-contained HTML page (and its JSON)."""
    from mmfuse import load
    from mmfuse.evaluation.report import build_report

    result = build_report(load(run), dataset_or_path(data), out_file, run_dir=run,
                          severities=_severities(severities), max_rows=max_rows,
                          explain_rows=explain_rows)
    print_metrics("report metrics", result["metrics"])
    out.print(f"report written to {out_file} (data in {out_file}.json)")
    refresh_card(run)
