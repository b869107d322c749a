# The two commands: `make book` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    ?= notebooks/*.ipynb

.PHONY: setup book test lint pytest labs execute sync lab bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[book,test]'
	touch $(STAMP)

## book: build the HTML book into _build/html (warnings are errors; labs render stored outputs)
book: $(STAMP)
	touch book/runtimes.md  # Sphinx re-reads the run-time table, built from the labs' metadata
	$(BIN)/jupyter-book build . --warningiserror --keep-going

## test: lint, library tests and notebook checks, every lab under COURSE_FAST=1, then the book
test: lint pytest labs book

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP)
	$(BIN)/python -m pytest

labs: $(STAMP)
	COURSE_FAST=1 $(BIN)/python -m pytest --nbmake --nbmake-timeout=300 -p no:cacheprovider $(LAB)

## execute: re-run labs in place in the full profile and record provenance (LAB=notebooks/05_vae.ipynb for one)
execute: $(STAMP)
	env -u COURSE_FAST $(BIN)/python scripts/execute_labs.py $(LAB)

## sync: update every lab's Colab badge and setup cell from the repository URL in _config.yml
sync: $(STAMP)
	$(BIN)/python scripts/sync_labs.py

## lab: open the labs in JupyterLab with the project's .venv
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet 'jupyterlab>=4'
	$(BIN)/jupyter lab notebooks

## bench: compare in-memory batching with a torchvision DataLoader
bench: $(STAMP)
	$(BIN)/python scripts/bench_data.py

clean:
	rm -rf _build .pytest_cache .ruff_cache
