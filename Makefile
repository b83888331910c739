# The two commands a newcomer needs: `make dev` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= keycard.example.yaml

.PHONY: dev test chaos bench lint format lock clean

# Exactly the versions in requirements-dev.lock, each checked against its hash; then Keycard itself.
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Keycard needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/keycard dev --config $(CONFIG)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

# The long chaos run (tests/chaos.py), three seeds in a row; `make test` runs a short one.
CHAOS_SEEDS ?= 1 2 3
chaos: $(STAMP)
	@for seed in $(CHAOS_SEEDS); do \
	  echo "== chaos seed $$seed"; \
	  $(BIN)/python -m tests.chaos --seed $$seed --requests 100 --kills 30 --span 240 || exit 1; \
	done

# Keycard side by side with the bare workflow of the same shape (bench/compare.py), then the
# burst of 1000 approvals on one worker (bench/burst.py), then 1000 grants ending in the same
# second (bench/expiry.py). Figures, not pass/fail tests.
BENCH_REQUESTS ?= 200
bench: $(STAMP)
	$(BIN)/python -m bench.compare --requests $(BENCH_REQUESTS) --concurrency 20
	$(BIN)/python -m bench.burst --requests 1000
	$(BIN)/python -m bench.expiry --requests 1000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# After changing dependencies in pyproject.toml: pin them again, with hashes. requirements.lock is
# what the image installs (no extras), requirements-dev.lock what `make dev` and `make test` do.
UV_COMPILE = $(BIN)/uv pip compile --quiet pyproject.toml --generate-hashes --universal \
	--python-version 3.11
lock: $(STAMP)
	$(BIN)/pip install --quiet uv
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev --extra test -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .keycard
