# Two commands on a fresh machine: `make demo` and `make test`. Each sets up the
# virtual environment it needs (pinned by requirements.lock) and then runs.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lumos-installed
# CPU torch 2.13.0+cpu: a local wheel folder when the machine has one
# ($$PIP_FIND_LINKS, /opt/wheels), otherwise PyTorch's own CPU index.
WHEELS ?= $(or $(PIP_FIND_LINKS),$(wildcard /opt/wheels))
TORCH_SRC := $(if $(WHEELS),--find-links $(WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
# uv itself is pinned by the lock (flwr depends on it), so one version is installed.
UV_VERSION := $(shell sed -n "s/^uv==//p" requirements.lock)
PYTEST_ARGS ?=
# Python caches compiled modules (.pyc) for everything `make` starts: with
# PYTHONDONTWRITEBYTECODE set (some machines set it), every process -- each Ray worker,
# each CLI call -- compiled Ray, Serve and the project again: 6-7 s of CPU per process
# importing Ray and Serve instead of about 2 s. __pycache__ is ignored by git.
unexport PYTHONDONTWRITEBYTECODE
# The type check in `make test` and `make lint`: mypy over lumos_ray, configured by
# [tool.mypy] in pyproject.toml; it must stay clean.
TYPECHECK ?= $(BIN)/mypy
# PostgreSQL server binaries for the store suite (tests/_postgres.py starts a throwaway
# server): found on PATH or in Debian's /usr/lib/postgresql/N/bin, else installed.
PG_FOUND = $(or $(and $(shell command -v initdb),$(shell command -v pg_ctl)),$(wildcard /usr/lib/postgresql/*/bin/pg_ctl))

.PHONY: install postgres bwrap chromium dashboard-assets demo test test-unit test-integration lint bench clean

install: $(STAMP) postgres bwrap chromium

# Debian's `postgresql` package (as root, or with sudo). The store tests fail, saying to
# run `make install`, when the binaries are missing; LUMOS_TEST_NO_POSTGRES=1 skips them.
postgres:
	@if [ -z "$(PG_FOUND)" ]; then \
	  echo "PostgreSQL binaries not found: installing Debian's postgresql for the store tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	fi

# Debian's `bubblewrap`: shell/python_exec run in it (no network, read-only host) when
# the sandbox is enabled. Optional: without it (or without user namespaces) they fall
# back to unshare or rlimits only (docs/tools.md says what each isolates).
bwrap:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  echo "bwrap not found: installing Debian's bubblewrap for the tool sandbox"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  ($$SUDO apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bubblewrap) || \
	  echo "bubblewrap not installed: sandboxed tools use the strongest fallback"; \
	fi

# Debian's `chromium` for the dashboard's browser test (Playwright drives it through
# executable_path: it downloads no browser), with a CJK font so Chinese pages render
# legibly in its screenshots. The test fails, saying to run
# `make install`, when chromium is missing.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "chromium not found: installing Debian's chromium for the dashboard browser test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-wqy-zenhei; \
	fi

# The dashboard's front-end libraries (pinned in dashboard-ui/package-lock.json), copied
# as built files into lumos_ray/serve/_dashboard/static/vendor, which is committed and
# shipped in the package: only whoever updates them needs Node and npm.
dashboard-assets:
	cd dashboard-ui && npm ci --no-audit --no-fund && ./copy-assets.sh

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python $(TORCH_SRC) --excludes .uv-excludes.txt -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/lumos demo

# Rebuild the demo model lumos-tiny-tools from scratch into the package
# (lumos_ray/models/_artifacts/lumos-tiny-tools, the committed copy `make demo` serves):
# teacher agents act generated tool tasks out on an embedded Ray cluster, the
# fine-tuning job teaches a random-init model, the merged weights replace the packaged
# ones. About 20 minutes on 2 CPU cores (recipe demo: 6,000 steps). See docs/demo-model.md.
demo-model: $(STAMP)
	$(BIN)/python -m lumos_ray.models._build_main --recipe demo

# The type check and the unit tier run beside the integration tier (see tests/run_tiers.sh).
test: $(STAMP) postgres bwrap chromium
	$(BIN)/ruff check lumos_ray tests benchmarks
	tests/run_tiers.sh $(BIN)/python "$(TYPECHECK)" $(PYTEST_ARGS)

test-unit: $(STAMP) postgres bwrap
	$(BIN)/python -m pytest -q -ra tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lumos_ray tests benchmarks
	$(BIN)/ruff format --check lumos_ray tests benchmarks
	$(TYPECHECK)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .lumos
