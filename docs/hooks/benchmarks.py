"""MkDocs hook: the benchmarks page's tables, made from ``benchmarks/results/*.json`` at
build time, so a figure in the docs cannot drift from its measurement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PLACEHOLDER = "<!-- benchmark tables -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, "\n\n".join(
        section(path.stem, json.loads(path.read_text()))
        for path in sorted(RESULTS.glob("*.json"))))


def section(name: str, result: dict[str, Any]) -> str:
    machine = result.get("machine", {})
    lines = [f"## {name}", "",
             f"`python -m benchmarks.{name}` — measured {result.get('measured_at', '?')}, "
             f"torch {machine.get('torch', '?')}, {machine.get('threads', '?')} threads.", ""]
    sets = result.get("sets")
    if isinstance(sets, dict):
        for set_name, values in sets.items():
            lines += [f"### {set_name}", ""]
            if isinstance(values, dict) and isinstance(values.get("results"), dict):
                lines += rows_table(values["results"])
            lines += scalars_table({k: v for k, v in values.items() if k != "results"}
                                   if isinstance(values, dict) else {"value": values})
    lines += scalars_table({k: v for k, v in result.items()
                            if k not in ("sets", "machine", "measured_at", "benchmark")})
    return "\n".join(lines)


def rows_table(rows: dict[str, Any]) -> list[str]:
    """One row per model: its numbers side by side."""
    columns = [c for c in ("accuracy", "macro_f1", "val_metric", "train_seconds", "wall_s")
               if any(isinstance(r, dict) and isinstance(r.get(c), int | float)
                      for r in rows.values())]
    if not columns:
        return scalars_table(rows)
    out = ["| model | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for model, values in rows.items():
        if isinstance(values, dict):
            out.append(f"| {model} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
        else:
            out.append(f"| {model} | {cell(values)} |" + " |" * (len(columns) - 1))
    return out + [""]


def scalars_table(values: dict[str, Any], prefix: str = "") -> list[str]:
    flat = dict(flatten(values, prefix))
    if not flat:
        return []
    return ["| measure | value |", "| --- | --- |",
            *(f"| {key} | {cell(value)} |" for key, value in flat.items()), ""]


def flatten(values: Any, prefix: str):
    """(dotted key, scalar) pairs of nested dicts; lists and long strings are left out."""
    if isinstance(values, dict):
        for key, value in values.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(values, int | float | bool | str) and len(str(values)) <= 80:
        yield prefix.rstrip("."), values


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value).replace("|", "/")
