"""Every table and line the commands print (rich), from the results the library returns."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mmfuse.auto.leaderboard import LeaderboardRow, ranked
from mmfuse.cli.app import out


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(name, str(value))
    for name, value in metrics.get("weighted", {}).items():  # --weight-col: rows weighted
        table.add_row(f"{name} (weighted)", f"{value:.4f}")
    out.print(table)


def print_components(components: dict[str, dict[str, str]]) -> None:
    """Registered components by kind: name and one-line summary."""
    for kind, entries in components.items():
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        for name, summary in entries.items():
            table.add_row(name, summary)
        out.print(table)


def print_demo(summary: dict[str, Any]) -> None:
    table = Table(title="easy-VQA test split (image + question -> answer)")
    for column in ("model", "accuracy", "macro-F1", "train seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in summary["models"].items():
        table.add_row(name, f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}",
                      f"{row['train_seconds']:.0f}")
    out.print(table)


def print_hits(hits: list[tuple[str, float]], kind: str, title: str) -> None:
    """A search's hits, best first: rank, score and the item."""
    table = Table(title=title)
    for column in ("rank", "score", kind):
        table.add_column(column)
    for rank, (item, score) in enumerate(hits, 1):
        table.add_row(str(rank), f"{score:.3f}", item)
    out.print(table)


def print_robustness(result: dict[str, Any]) -> None:
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


def print_profile(result: dict[str, Any]) -> None:
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


def print_explanations(results: list[dict[str, Any]]) -> None:
    for record in results:
        shares = ", ".join(f"{m} {v:.0%}" for m, v in record["ablation_shares"].items())
        out.print(f"row {record['row']}: {record['prediction']} ({record['score']:.2f}); {shares}")
        for column, drops in record["photos"].items():  # which of a cell's photos mattered
            out.print(f"  {column}: " + ", ".join(f"photo {k + 1} {drop:+.2f}"
                                                  for k, (_, drop) in enumerate(drops)))


def leaderboard_table(board: dict[str, Any]) -> Table:
    """An auto-mode run's leaderboard (``read_leaderboard``), best first."""
    metric = board["metric"]
    rows: list[LeaderboardRow] = board["rows"]
    folds = max([row.folds or 1 for row in rows] or [1])
    judged = f"out of fold over {folds} folds" if folds > 1 else "validation split"
    encoding = (f"; frozen features {board['frozen_features_s']:.0f} s of them: "
                f"{board['frozen_features']}" if "frozen_features_s" in board else "")
    table = Table(title=f"leaderboard ({metric}, {judged}; preset {board.get('preset')}, "
                        f"{board.get('elapsed_s', 0):.0f} s of {board.get('time_limit_s', 0):.0f} s"
                        f"{encoding})")
    table.add_column("#", justify="right")
    table.add_column("candidate")
    table.add_column(metric, justify="right")
    table.add_column("folds", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("predict s / 1k rows", justify="right")
    table.add_column("weight in ensemble", justify="right")
    table.add_column("")
    for rank, row in enumerate(ranked(rows, metric), start=1):
        table.add_row(
            str(rank) if row.scored else "-", row.candidate,
            f"{row.val_metric:.4f}" if row.scored else row.describe_status(),
            _folds(row, folds),
            f"{row.fit_s:.1f}" if row.fit_s is not None else "",
            f"{row.predict_s_per_1k:.3f}" if row.predict_s_per_1k is not None else "",
            f"{row.weight:.2f}" if row.weight is not None else row.method or "",
            "[bold green]chosen[/]" if row.chosen else "",
        )
    return table


def _folds(row: LeaderboardRow, folds: int) -> str:
    """How many folds judged the row: fewer than the others when time ran short (it was then
    compared with the choice on those folds' rows only)."""
    if row.folds is None or row.member:
        return ""
    return f"{row.folds} of {folds}" if row.folds < folds else str(row.folds)
