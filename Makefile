# Quick start:  make book   (build the executed book into _build/html)
#               make test   (every test, and every lesson under nbval: each notebook runs once)
#               make test-fast  (the unit tests without notebooks: the inner loop)
# Everything runs in .venv, created on first use from pyproject.toml, with the
# versions pinned in ci/constraints.txt (torch 2.13.0 CPU, jupyter-book 1.0.4.post1).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
# Small CPU experiments are faster on one thread, and far faster when the cores are shared.
export OMP_NUM_THREADS ?= 1

.PHONY: all venv test test-fast lint types unit notebooks book browser exercises bench clean claims-seeds claims-full
all: test

$(STAMP): pyproject.toml ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c ci/constraints.txt -e ".[test,book,browser]" "jupyter-book==1.0.4.post1"
	# galore-torch (tests/test_galore.py: parity with the authors' GaLore) without the bitsandbytes and
	# transformers its metadata asks for: the test loads only its AdamW.
	$(PY) -m pip install -q --no-deps galore-torch==1.0
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lrkit)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Tests run on JOBS workers (pytest-xdist; default: the machine's cores, at most 4), a file per
# worker (--dist loadfile): a notebook's cells stay in one kernel and a module's fixtures are built
# once. (loadgroup would split files finer, but pytest-xdist 3.8 cannot rename pytest 9's node ids,
# so its groups are silently ignored.) Lessons first: the longest files start first. JOBS=0: one process.
JOBS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))" 2>/dev/null || echo 2)
XDIST := $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadfile)
PYTEST := $(PY) -m pytest -q -p no:cacheprovider $(XDIST)

unit: $(STAMP)
	$(PYTEST) tests

# The inner loop: every unit test, no notebook, subprocess or exercise run. One chapter: -m ch04.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

# Lint and types (CI runs both, and both gate): ruff with pyproject's configuration over the code
# and tests; mypy --strict over the whole package (pyproject's [tool.mypy]).
lint: $(STAMP)
	$(PY) -m ruff check lrkit tests bench tools
	$(PY) -m mypy lrkit

types: lint

# Lessons under nbval. Solutions run in tests/test_exercises.py (their setup once, each exercise
# in a forked child), exercises as handed out there too: every notebook executes once in `make test`.
notebooks: $(STAMP)
	$(PYTEST) --nbval-lax lessons

# One pytest over the unit tests and the lessons, so both workers stay busy to the end.
test: $(STAMP)
	$(PYTEST) --nbval-lax lessons tests --ignore=tests/fixtures

exercises: $(STAMP)
	$(PY) -m lrkit.course make-exercises

# The build executes every lesson with LRKIT_LEDGER set; the claims page (book/claims.md)
# is generated from that ledger after the last lesson ran (book/_ext/lrkit_book.py).
LEDGER ?= $(CURDIR)/_build/claims/ledger.jsonl
book: $(STAMP)
	LRKIT_LEDGER=$(LEDGER) $(VENV)/bin/jupyter-book build . -W -n --keep-going
	$(PY) -m lrkit.course check-leaks _build/html
	$(PY) -m lrkit.course colab _build
	@echo "Book built: open _build/html/index.html"

# The built book in headless Chromium, offline (tools/browser_check.py): math rendered from the
# book's own MathJax, figures numbered and captioned, no overflow, sliders that move; screenshots
# and a summary in _build/screenshots. Skipped, with a line saying so, where there is no Chromium.
CHROMIUM ?= /usr/bin/chromium
browser: $(STAMP)
	@if [ -x "$(CHROMIUM)" ]; then $(PY) tools/browser_check.py _build/html --out _build/screenshots \
	  --chromium $(CHROMIUM); else echo "browser check skipped: no Chromium at $(CHROMIUM)"; fi

bench: $(STAMP)
	$(PY) bench/bench.py
	$(PY) bench/bench_sweep.py

clean:
	rm -rf _build .pytest_cache

# Every lesson at small scale for seeds 0-4 (two kernels at a time): per claim, how many
# seeds pass and the smallest margin (_build/claims/seeds/claims.md, .csv); a later
# `make book` shows them on the claims page.
claims-seeds: $(STAMP)
	$(PY) -m lrkit.claims_runs seeds --seeds 0-4 --jobs 2 --out _build/claims/seeds lessons/*.ipynb

# Every lesson once at LRKIT_SCALE=full: its ledger and each lesson's time (_build/claims/full/).
claims-full: $(STAMP)
	$(PY) -m lrkit.claims_runs full --out _build/claims/full lessons/*.ipynb
