"""The commands on one trained model's outputs: evaluate, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli.app import Opt, app, friendly, out, writable_file
from mmfuse.cli.render import print_metrics
from mmfuse.cli.sources import dataset_or_path
from mmfuse.evaluation.model_card import refresh_card
from mmfuse.io import write_json
from mmfuse.model_folder import EVALUATION_FILE
from mmfuse.tasks import get_task


@app.command()
@friendly
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Labelled manifest, or a built-in split: easy-vqa:test")],
    output: Annotated[Path | None, Opt(help="JSON file (default RUN/evaluation.json)",
                                        callback=writable_file)] = None,
) -> None:
    """Metrics of a trained model on labelled data, written as JSON."""
    from mmfuse import load

    metrics = load(run).evaluate(dataset_or_path(data))
    target = output or run / EVALUATION_FILE
    write_json(target, metrics)
    print_metrics(f"evaluation on {data}", metrics)
    out.print(f"written to {target}")
    refresh_card(run)


@app.command()
@friendly
def predict(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[str, Opt(help="Manifest (or tar shards) to predict")],
    output: Annotated[Path, Opt(help="CSV with predictions", callback=writable_file)] = Path(
        "predictions.csv"),
) -> None:
    """Predictions (with class probabilities and modality weights) as CSV."""
    from mmfuse import load

    model = load(run)
    get_task(model.config.data.task).require_predictions("predict")
    written = model.predict_to_csv(dataset_or_path(data), output)
    out.print(f"{written} predictions written to {output}")
