"""The docs hook that reads figures from ``benchmarks/results/*.json``: a reference resolves to
the measured value, and a reference to a figure that was never measured fails the build."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs/hooks/benchmarks.py")
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)
PAGE = SimpleNamespace(file=SimpleNamespace(src_path="page.md"))


def render(markdown: str) -> str:
    return hook.on_page_markdown(markdown, PAGE)


def test_a_reference_reads_the_measured_value_with_its_format():
    measured = json.loads((ROOT / "benchmarks/results/speed.json").read_text())
    assert render("{{ speed/prediction/ratio | .3f }}") == f"{measured['prediction']['ratio']:.3f}"
    assert render("{{ train_memory/runs/2/rows | , }}") == "3,000,000"
    table = render("{{ quality/sets/emoji/results | table }}")
    assert table.startswith("| model | accuracy | macro_f1 | train_seconds |")
    assert "| fusion concat |" in table


@pytest.mark.parametrize("reference", ["nowhere/x", "speed/prediction/no_such_key", "train_memory/runs/9"])
def test_a_figure_that_was_never_measured_fails_the_build(reference):
    with pytest.raises(ValueError, match=re.escape(reference)):
        render(f"see {{{{ {reference} }}}}")


def test_every_page_resolves_its_figures():
    for page in (ROOT / "docs").glob("*.md"):
        rendered = render(page.read_text())
        assert "{{" not in rendered, page.name


@pytest.mark.parametrize("name, set_name", [("MATH-V", "math-vision"), ("emoji", "emoji")])
def test_the_readme_results_table_equals_the_measurement(name, set_name):
    """The README is not built by MkDocs, so its one results table is checked here."""
    measured = json.loads((ROOT / "benchmarks/results/auto.json").read_text())["sets"][set_name]
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith(f"| {name} ("))
    anchors = [r["macro_f1"] for model, r in measured["results"].items()
               if model.startswith("sklearn")]
    assert f"({measured['train_rows']:,} / {measured['test_rows']:,})" in row
    assert f"**{measured['auto_test_macro_f1']:.3f}**" in row
    assert f"{measured['search_wall_s']:.0f} s ({measured['frozen_features_s']:.0f} s)" in row
    assert f"| {max(anchors):.3f} (" in row
