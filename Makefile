# Each target bootstraps .venv by itself. torch==2.13.0 goes in first: it is a CPU wheel that
# pip finds on disk here, and the project's `torch>=` range is then already satisfied.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmfuse-installed

.PHONY: demo test bench lint docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mmfuse demo --out runs/demo

# The tests start with the lint and the docs: a broken layer, a ruff finding or a broken
# docs page (mkdocs --strict) fails `make test` too.
test: lint docs
	$(BIN)/python -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Speed/quality benchmarks: run on purpose, never in CI; each writes benchmarks/results/*.json.
# The emoji set is drawn with Debian's colour emoji font.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || \
		{ [ "$$(id -u)" = 0 ] && apt-get install -y -q fonts-noto-color-emoji >/dev/null; } || \
		sudo apt-get install -y -q fonts-noto-color-emoji
	$(BIN)/python -m benchmarks.quality
	$(BIN)/python -m benchmarks.encode
	$(BIN)/python -m benchmarks.speed
	$(BIN)/python -m benchmarks.retrieval
	$(BIN)/python -m benchmarks.serve_load
	$(BIN)/python -m benchmarks.predict_memory
	$(BIN)/python -m benchmarks.train_memory
	$(BIN)/python -m benchmarks.auto
	$(BIN)/python -m benchmarks.tabular
	$(BIN)/python -m benchmarks.fusions
	$(BIN)/python -m benchmarks.fusions
	$(BIN)/python -m benchmarks.predict_memory
	$(BIN)/python -m benchmarks.train_memory

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache site
