"""Training: train (a fixed model, or auto mode's search), leaderboard, demo, list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmfuse.cli.app import Opt, app, err, friendly, invoked_command, out, writable_folder
from mmfuse.cli.columns import fit_columns_to_manifest
from mmfuse.cli.options import apply_flags, encoders_given, model_flags_given, with_config_flags
from mmfuse.cli.render import leaderboard_table, print_components, print_demo, print_metrics
from mmfuse.cli.sources import dataset_or_path
from mmfuse.config import Config
from mmfuse.errors import ConfigError
from mmfuse.io import write_json
from mmfuse.model_folder import CARD_FACTS_FILE, CARD_FILE, LEADERBOARD_FILE, TEST_METRICS_FILE
from mmfuse.progress import CONSOLE
from mmfuse.tasks import get_task


@app.command()
@friendly
@with_config_flags
def train(
    context: typer.Context,
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
            write_json(out_dir / TEST_METRICS_FILE, metrics)
        print_metrics("test", metrics)
    if is_main_process():
        _record_card(out_dir, cfg, train_data, dataset or data, invoked_command(context))
    out.print(f"model saved in {out_dir}; its card: {out_dir / CARD_FILE}")


def _record_card(out_dir: Path, cfg: Config, train_data: Any, source: str | None,
                 command: str) -> None:
    """What the model card says of the training table and the command, then the card."""
    from datetime import datetime

    import pandas as pd

    from mmfuse.data.manifest import read_manifest
    from mmfuse.data.shards import is_shard_spec
    from mmfuse.evaluation.model_card import data_facts, write_card

    frame = train_data if isinstance(train_data, pd.DataFrame) else (
        None if is_shard_spec(train_data) else read_manifest(train_data))
    facts = (data_facts(frame, cfg, str(source)) if frame is not None
             else {"source": str(source)})
    facts |= {"command": command,
              "created_at": datetime.now().isoformat(timespec="seconds")}
    write_json(out_dir / CARD_FACTS_FILE, facts)
    write_card(out_dir)


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
    resuming_fixed = resume and (out_dir / "config.yaml").exists() and not (
        out_dir / LEADERBOARD_FILE).exists()
    return not model_flags and not resuming_fixed


def _auto(cfg: Config, train_data, val_data, out_dir: Path, resume: bool, preset: str | None,
          time_limit: float | None, epochs: int | None, encoders: list[str]):
    """``encoders``: the kinds whose encoder the user named, used in place of the preset's."""
    import dataclasses

    from mmfuse.auto import AutoSearch
    from mmfuse.auto.leaderboard import read_leaderboard
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
    from mmfuse.auto.leaderboard import read_leaderboard

    out.print(leaderboard_table(read_leaderboard(run)))


@app.command("list")
def list_command() -> None:
    """Registered encoders, fusions, heads and built-in datasets."""
    from mmfuse import list_components

    print_components(list_components())


@app.command()
@friendly
def demo(
    out_dir: Annotated[Path, Opt("--out", callback=writable_folder)] = Path("runs/demo"),
    epochs: Annotated[int, Opt()] = 6,
) -> None:
    """Train on easy-VQA (built in): fused model vs image-only vs text-only, on the test split."""
    from mmfuse.demo import run_demo

    print_demo(run_demo(out_dir, epochs=epochs))
    out.print(f"runs and summary.json in {out_dir}")
