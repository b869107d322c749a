# The two commands: `make book` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    ?= notebooks/*.ipynb
# How many labs `make labs` runs side by side (pytest-xdist), each with one torch thread; JOBS=1: one
# after the other, with all threads.
JOBS   ?= 2
PARALLEL := $(if $(filter 1,$(JOBS)),,yes)

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

## test: lint, the book (built once), library tests and notebook checks (the HTML checks read that
## build instead of building it again), then every lab under COURSE_FAST=1, two at a time
test: lint book
	$(MAKE) --no-print-directory pytest labs COURSE_BOOK_HTML=$(CURDIR)/_build/html

lint: $(STAMP)
	$(BIN)/ruff check .

# Alone, `make pytest` builds the book for its HTML checks; `make test` hands it the build of `book`.
pytest: $(STAMP)
	$(if $(COURSE_BOOK_HTML),COURSE_BOOK_HTML=$(COURSE_BOOK_HTML) )$(BIN)/python -m pytest

# Labs write only files named after themselves (checkpoints/NN_*), so they can run side by side. The
# data and the FID reference features they share are fetched first, by one process; each lab gets one
# torch thread, so that two labs on two cores do not fight over them.
labs: $(STAMP)
	COURSE_FAST=1 $(BIN)/python -c "from course_lib import data, metrics; data.load_mnist('train', verbose=False); \
	  data.load_mnist('test', verbose=False); metrics.reference_features('mnist', 'test')"
	COURSE_FAST=1 $(if $(PARALLEL),OMP_NUM_THREADS=1) $(BIN)/python -m pytest --nbmake --nbmake-timeout=300 \
	  -p no:cacheprovider $(if $(PARALLEL),-n $(JOBS)) $(LAB)

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
