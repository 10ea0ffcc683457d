# Two commands on a fresh machine: `make serve` and `make test`.
# Both create .venv and install what they need from the lock (locks/requirements.txt:
# every version pinned, every file hash-checked; `make lock` updates it, see
# docs/development.md); pip's wheel cache keeps the compiled llama-cpp-python wheel,
# so only the very first setup compiles it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := locks/requirements.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

ARGS ?=
.DEFAULT_GOAL := help

CHROMIUM ?= /usr/bin/chromium

.PHONY: serve test lint typecheck unit clean help chromium deploy-tools screenshots lock

# The benchmark harness (make bench, make bench-quick) lives with its code.
-include bench/bench.mk

help:
	@echo "make serve   run the gateway on its embedded default (http://127.0.0.1:8434)"
	@echo "make test    lint, type-check and run the whole test suite"
	@echo "make lock    re-resolve locks/*.txt from pyproject.toml (docs/development.md)"
	@echo "make screenshots  refresh docs/screenshots from the console's browser tests"

# The locked set first, hash-checked (a cached wheel built from an sdist is used once
# pip has checked the sdist's hash), then aistack itself without touching the set.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# Re-resolve the locks from pyproject.toml, keeping every pin that still fits (uv, itself
# installed hash-checked from locks/uv.txt). `make lock ARGS=--upgrade` moves everything
# to the newest allowed, `ARGS="--upgrade-package openai"` one package. The image locks
# take the same versions as the development lock.
UV_DIR := build/lock
UV     := $(UV_DIR)/bin/uv
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' \
	pyproject.toml $(UV_DIR)/build-system.in

$(UV): locks/uv.txt
	@test -x $(UV_DIR)/bin/python || $(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r locks/uv.txt
	@touch $@

lock: $(UV)
	@$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' > $(UV_DIR)/build-system.in
	$(UV_COMPILE) --extra local --extra postgres --extra redis --extra test -o $(LOCK) $(ARGS)
	$(UV_COMPILE) --extra postgres --extra redis -c $(LOCK) -o locks/image.txt
	$(UV_COMPILE) --extra local --extra postgres --extra redis -c $(LOCK) -o locks/image-local.txt

serve: $(STAMP)
	@echo "aistack is installed in $(CURDIR)/$(VENV)/bin. To type plain 'aistack' (aistack keys,"
	@echo "aistack admin link, ...) in another terminal: export PATH=\"$(CURDIR)/$(VENV)/bin:\$$PATH\""
	$(BIN)/aistack serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

# The console's browser tests drive Debian's Chromium (never a downloaded browser):
# installed here when missing. If it cannot be, those tests skip saying why (and fail
# under CI=true).
chromium:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian's chromium for the console's browser tests"; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; } \
	  || echo "could not install chromium: the browser tests will say so"; }

# The deploy files are checked by the tools that read them: kubectl kustomize and
# docker-compose config (Debian's kubernetes-client and docker-compose), installed here
# when missing. If they cannot be, those tests skip saying why (and fail under CI=true).
deploy-tools:
	@command -v kubectl >/dev/null && command -v docker-compose >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian's kubernetes-client and docker-compose for the deploy checks"; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq \
	      $$(command -v kubectl >/dev/null || echo kubernetes-client) \
	      $$(command -v docker-compose >/dev/null || echo docker-compose); } \
	  || echo "could not install them: the deploy checks will say so"; }

# The suite under coverage (the gateways it starts included, see pyproject.toml), then
# the floor; `make unit ARGS=tests/test_x.py` runs some tests and skips the floor.
# A failing run names its failures last and keeps their logs in build/test-results/
# (tests/results.py; docs/development.md).
unit: $(STAMP) chromium deploy-tools
	@rm -rf build/coverage && mkdir -p build/coverage build/test-results
	$(BIN)/coverage run -m pytest --junitxml=build/test-results/junit.xml $(ARGS)
	@$(BIN)/coverage combine -q
	@$(BIN)/coverage report --fail-under=0 > build/coverage/report.txt; grep ^TOTAL build/coverage/report.txt
	@if [ -z "$(ARGS)" ]; then $(BIN)/coverage report --format=total > /dev/null \
	  || { cat build/coverage/report.txt; echo "coverage is under the floor (pyproject.toml: fail_under)"; exit 2; }; fi

screenshots: $(STAMP) chromium
	AISTACK_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest tests/test_console_browser.py

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build/coverage
