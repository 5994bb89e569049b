"""Training and the commands on one trained model: train, leaderboard, evaluate, predict,
list, demo, robustness, profile, explain, report. Retrieval (`retrieval_commands.py`) and
serving and export (`serving_commands.py`) live beside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mmfuse.cli.app import (
    Opt,
    app,
    err,
    friendly,
    out,
    print_metrics,
    writable_file,
    writable_folder,
)
from mmfuse.cli.columns import fit_columns_to_manifest
from mmfuse.cli.options import (
    apply_flags,
    encoders_given,
    model_flags_given,
    with_config_flags,
)
from mmfuse.config import Config
from mmfuse.errors import ConfigError
from mmfuse.io import write_json
from mmfuse.progress import CONSOLE
from mmfuse.tasks import get_task


def dataset_or_path(value: str | Path | None):
    """A manifest path, tar shards (``shards/{000..009}.tar``, ``pipe:...``), or a built-in
    split named ``dataset:split`` (e.g. ``easy-vqa:test``)."""
    from mmfuse.data.shards import is_shard_spec

    if value is None or is_shard_spec(value):
        return value
    value = Path(value)
    if value.exists() or ":" not in str(value):
        return value
    from mmfuse.data.builtin import DATASETS

    name, split = str(value).split(":", 1)
    if name not in DATASETS:
        return value  # not a built-in: let the reader report the missing file
    splits = DATASETS.get(name)().splits
    if split not in splits:
        raise ConfigError(f"{name} has splits {', '.join(splits)}, not '{split}'")
    return splits[split]


@app.command()
@friendly
@with_config_flags
def train(
    out_dir: Annotated[Path, Opt("--out", help="Run folder: checkpoints, metrics, model",
                                  callback=writable_folder)],
    data: Annotated[str | None, Opt(help="Training manifest (CSV, TSV, JSONL, Parquet) or tar "
                                        "shards: 'shards/{000..099}.tar'")] = None,
    dataset: Annotated[str | None, Opt(help="A built-in dataset instead of --data")] = None,
    val_data: Annotated[str | None, Opt(help="Validation manifest (default: split)")] = None,
    test_data: Annotated[str | None, Opt(help="Evaluate on this manifest after training")] = None,
    config: Annotated[Path | None, Opt(help="YAML config; flags override it")] = None,
    cache_dir: Annotated[str | None, Opt(help="Feature cache folder, or 'none'")] = None,
    resume: Annotated[bool, Opt(help="Continue a killed run from its last checkpoint")] = False,
    preset: Annotated[str | None, Opt(help="Auto mode: fast|medium|best (default medium)")] = None,
    time_limit: Annotated[float | None, Opt(help="Auto mode: seconds for the whole search")] = None,
    flags: dict[str, Any] | None = None,
) -> None:
    """Train a model on a table of images and texts.

    Without model flags (--fusion, --image-encoder, --text-encoder, --modalities, --finetune-*,
    --image-size, --hidden-dim, --dropout) or a config with a `model:` section, this runs auto
    mode: a time-limited search over encoders and fusions, judged on validation data (see
    `mmfuse leaderboard OUT`).
    """
    from mmfuse import estimator_for
    from mmfuse.training.distributed import is_main_process

    if not is_main_process():  # under `accelerate launch`: one process speaks and writes
        out.quiet = err.quiet = CONSOLE.quiet = True
    flags = flags or {}
    model_flags = model_flags_given(flags) + (["a config with a model: section"]
                                              if config and _has_model_section(config) else [])
    auto = _runs_auto_mode(out_dir, bool(model_flags), resume)
    if model_flags and (preset or time_limit):
        raise ConfigError("--preset/--time-limit run auto mode, which chooses the model itself: "
                          f"drop them, or drop {', '.join(model_flags)}")
    resuming_stored = resume and not auto and config is None and (out_dir / "config.yaml").exists()
    cfg, splits = _train_config(out_dir / "config.yaml" if resuming_stored else config, dataset,
                                keep_data_section=resuming_stored)
    if not dataset and data is None:
        raise ConfigError("name the training data: --data train.csv (or --dataset easy-vqa)")
    apply_flags(cfg, flags)
    cfg.cache_dir = cache_dir or cfg.cache_dir

    train_data = splits.get("train") if dataset else dataset_or_path(data)
    fit_columns_to_manifest(train_data, cfg, flags)
    cfg.validate()
    test = splits.get("test") if dataset and test_data is None else dataset_or_path(test_data)
    if auto and not get_task(cfg.data.task).paired:  # auto mode searches labelled tasks
        predictor = _auto(cfg, train_data, dataset_or_path(val_data), out_dir, resume, preset,
                          time_limit, flags.get("epochs"), encoders_given(flags))
    else:
        predictor = estimator_for(cfg)(cfg).fit(train_data, dataset_or_path(val_data),
                                                run_dir=out_dir, resume=resume)
    print_metrics("validation", predictor.metrics_["validation"])
    if predictor.skipped_rows_:
        out.print(f"skipped {len(predictor.skipped_rows_)} bad row(s): see {out_dir}/bad_rows.csv")
    if test is not None:
        metrics = predictor.evaluate(test)
        if is_main_process():
            write_json(out_dir / "test_metrics.json", metrics)
        print_metrics("test", metrics)
    out.print(f"model saved in {out_dir}")


def _train_config(config: Path | None, dataset: str | None,
                  keep_data_section: bool) -> tuple[Config, dict]:
    """The config before flags (a YAML file or the defaults) and a built-in dataset's splits,
    whose columns become the data section unless a stored run's are kept."""
    cfg = Config.from_yaml(config) if config else Config()
    if not dataset:
        return cfg, {}
    from mmfuse.data.builtin import DATASETS

    builtin = DATASETS.get(dataset)()
    if not keep_data_section:
        cfg.data = builtin.data
    return cfg, builtin.splits


def _runs_auto_mode(out_dir: Path, model_flags: bool, resume: bool) -> bool:
    """Auto mode unless the model is chosen, or a fixed-model run is being resumed."""
    from mmfuse.auto.leaderboard import LEADERBOARD_FILE

    resuming_fixed = resume and (out_dir / "config.yaml").exists() and not (
        out_dir / LEADERBOARD_FILE).exists()
    return not model_flags and not resuming_fixed


def _auto(cfg: Config, train_data, val_data, out_dir: Path, resume: bool, preset: str | None,
          time_limit: float | None, epochs: int | None, encoders: list[str]):
    """``encoders``: the kinds whose encoder the user named, used in place of the preset's."""
    import dataclasses

    from mmfuse.auto import AutoSearch
    from mmfuse.auto.leaderboard import leaderboard_table, read_leaderboard
    from mmfuse.auto.portfolio import get_preset, with_encoders

    portfolio = with_encoders(get_preset(preset or "medium"),
                              **{kind: getattr(cfg.model, f"{kind}_encoder") for kind in encoders})
    if epochs is not None:  # the user's cap wins over the preset's
        portfolio = dataclasses.replace(portfolio, epochs=epochs)
    predictor = AutoSearch(cfg, portfolio, time_limit).fit(train_data, val_data, run_dir=out_dir,
                                                            resume=resume)
    out.print(leaderboard_table(read_leaderboard(out_dir)))
    return predictor


def _has_model_section(config: Path) -> bool:
    import yaml

    try:
        return "model" in (yaml.safe_load(config.read_text()) or {})
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {config}: {error}") from error


@app.command()
@friendly
def leaderboard(run: Annotated[Path, typer.Argument(help="Run folder of an auto-mode train")]) -> None:
    """The candidates an auto-mode run tried: validation metric, fit and predict time."""
    from mmfuse.auto.leaderboard import leaderboard_table, read_leaderboard

    out.print(leaderboard_table(read_leaderboard(run)))


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
    target = output or run / "evaluation.json"
    write_json(target, metrics)
    print_metrics(f"evaluation on {data}", metrics)
    out.print(f"written to {target}")


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


@app.command("list")
def list_command() -> None:
    """Registered encoders, fusions, heads and built-in datasets."""
    from mmfuse import list_components

    for kind, entries in list_components().items():
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        for name, summary in entries.items():
            table.add_row(name, summary)
        out.print(table)


@app.command()
@friendly
def demo(
    out_dir: Annotated[Path, Opt("--out", callback=writable_folder)] = Path("runs/demo"),
    epochs: Annotated[int, Opt()] = 6,
) -> None:
    """Train on easy-VQA (built in): fused model vs image-only vs text-only, on the test split."""
    from mmfuse.demo import run_demo

    summary = run_demo(out_dir, epochs=epochs)
    table = Table(title="easy-VQA test split (image + question -> answer)")
    for column in ("model", "accuracy", "macro-F1", "train seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in summary["models"].items():
        table.add_row(name, f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}",
                      f"{row['train_seconds']:.0f}")
    out.print(table)
    out.print(f"runs and summary.json in {out_dir}")


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
    target = output or run / "robustness.json"
    write_json(target, result)
    table = Table(title=f"robustness ({result['metric']}, clean {result['clean']:.4f})")
    table.add_column("corruption")
    for severity in result["severities"]:
        table.add_column(f"severity {severity}", justify="right")
    for kind, curves in result["corruptions"].items():
        for name, curve in curves.items():
            table.add_row(f"{kind}: {name}", *[f"{v:.4f}" for v in curve.values()])
    for name, value in result["ablation"].items():
        table.add_row(name, f"{value:.4f}", *[""] * (len(result["severities"]) - 1))
    out.print(table)
    if "summary" in result:
        out.print(f"robustness summary (mean corrupted / clean): {result['summary']:.3f}")
    out.print(f"written to {target}")


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
    target = output or run / "profile.json"
    write_json(target, result)
    table = Table(title="latency")
    for column in ("setting", "p50 ms", "p95 ms", "rows/s"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for size, modes in result["latency"].items():
        for mode, values in modes.items():
            if values:
                table.add_row(f"{size} {mode}", f"{values['p50_ms']:.1f}",
                              f"{values['p95_ms']:.1f}", f"{values['rows_per_second']:.0f}")
    out.print(table)
    out.print(f"parameters: {result['total_parameters']:,}; peak RSS {result['peak_rss_mb']:.0f} MB")
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
    for record in results:
        shares = ", ".join(f"{m} {v:.0%}" for m, v in record["ablation_shares"].items())
        out.print(f"row {record['row']}: {record['prediction']} ({record['score']:.2f}); {shares}")
        for column, drops in record["photos"].items():  # which of a cell's photos mattered
            out.print(f"  {column}: " + ", ".join(f"photo {k + 1} {drop:+.2f}"
                                                  for k, (_, drop) in enumerate(drops)))
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
