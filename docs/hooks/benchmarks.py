"""MkDocs hook: figures in the docs read from ``benchmarks/results/*.json`` at build time,
so a figure cannot drift from its measurement.

- ``<!-- benchmark tables -->`` becomes one section per results file (the benchmarks page);
- ``{{ speed/prediction/ratio | .2f }}`` anywhere becomes that value of
  ``benchmarks/results/speed.json``, formatted with the Python format spec after ``|``
  (list items by index: ``{{ auto/sets/emoji/auto_minus_stacking_anchor_on_test/interval_90/0 }}``);
  the spec ``table`` writes a dict of rows (one per model) as a Markdown table.
  A reference to a file or key that does not exist fails the build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PLACEHOLDER = "<!-- benchmark tables -->"
REFERENCE = re.compile(r"\{\{\s*([^{}|]+?)\s*(?:\|\s*([^{}]*?)\s*)?\}\}")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, "\n\n".join(
            section(path.stem, json.loads(path.read_text()))
            for path in sorted(RESULTS.glob("*.json"))))
    return REFERENCE.sub(lambda match: figure(match[1], match[2], page), markdown)


def figure(reference: str, spec: str | None, page: Any) -> str:
    """The value ``reference`` (``file/key/key...``) names, formatted by ``spec``."""
    name, *keys = reference.split("/")
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"{page.file.src_path}: {{{{ {reference} }}}} names {path.name}, "
                         f"which is not in {RESULTS}")
    value: Any = json.loads(path.read_text())
    for key in keys:
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"{page.file.src_path}: {{{{ {reference} }}}}: {path.name} has "
                             f"no {key!r} there") from None
    if spec == "table":
        return "\n".join(rows_table(value))
    return format(value, spec) if spec else cell(value)


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
            out.append(f"| {model} | " + " | ".join(
                seconds(values.get(c)) if c.endswith("seconds") else cell(values.get(c))
                for c in columns) + " |")
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


def seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else cell(value)


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value).replace("|", "/")
