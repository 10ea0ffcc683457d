# Two commands on a fresh machine: `make serve` and `make test`.
# Both create .venv and install what they need; pip's wheel cache keeps the
# compiled llama-cpp-python wheel, so only the very first setup compiles it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

ARGS ?=
.DEFAULT_GOAL := help

.PHONY: serve test lint typecheck unit clean help

# The benchmark harness (make bench, make bench-quick) lives with its code.
-include bench/bench.mk

help:
	@echo "make serve   run the gateway on its embedded default (http://127.0.0.1:8434)"
	@echo "make test    lint, type-check and run the whole test suite"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,postgres,redis,test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

serve: $(STAMP)
	$(BIN)/aistack serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(ARGS)

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
