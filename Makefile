# Two set-up commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create/refresh .venv from pyproject.toml; nothing relies on what was installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint format clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on this machine kind; an unpinned torch pulls a CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[hf,eval,dev,formats,serve,ray,peft,baselines]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lmforge demo

# Headless Chromium + chromedriver for the browser tests (lmforge report, the serve playground):
# installed from Debian when the tests run as root under CI; elsewhere a missing browser skips them.
browser:
	@if [ -n "$$CI" ] && [ "$$(id -u)" = 0 ] && ! command -v chromedriver >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
