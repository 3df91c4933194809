# make serve   create .venv if needed, convert the default model on first use, start the server
# make test    create .venv if needed, run ruff, mypy, the docs build and every test (unit,
#              integration, e2e), printing the 25 slowest; what CI runs
# make check   the inner loop: ruff, mypy, the docs build and the unit tests on fakes
#              (no model, no slow ones)
# make bench   the Best-of-8 overhead benchmark (HTTP server vs the raw engine, same run)
# make eval    reward against tokens per algorithm and budget (alignserve eval $(ARGS))
# make load    load sweep over concurrency levels (alignserve bench $(ARGS))
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: env serve test check unit lint bench eval load

env:
	@scripts/setup_env.sh cpu

serve: env
	$(VENV)/bin/alignserve serve $(ARGS)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: env
	$(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=25 $(ARGS)

check: env
	$(PY) -m pytest -q tests/test_lint.py tests/test_docs.py tests/unit -m "not model and not slow" $(ARGS)

unit: env
	$(PY) -m pytest tests/unit $(ARGS)

bench: env
	$(PY) bench/overhead.py $(ARGS)

eval: env
	$(VENV)/bin/alignserve eval $(ARGS)

load: env
	$(VENV)/bin/alignserve bench $(ARGS)
