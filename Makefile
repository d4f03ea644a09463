# Two commands for a fresh clone: `make demo` and `make test`.
# torch goes in first, then everything else under a constraints file that pins the installed torch,
# so pip never swaps in a multi-GB CUDA build. Override TORCH_SPEC elsewhere (any torch >= 2.4 works).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.omniret-installed

.PHONY: install demo test lint bench clean browser serve default-model

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > .constraints.txt
	$(PIP) install -c .constraints.txt -e ".[dev,serve,train,eval,pgvector,qdrant,ray,fast]"
	touch $(STAMP)

install: $(STAMP) browser

# headless Chromium for the web-page test (tests/integration/test_serve_browser.py): Debian's package, as root
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "warning: chromium is missing and could not be installed (run as root: apt-get install chromium)"

demo: $(STAMP)
	$(PY) -m omniret.demo

serve: demo
	$(PY) -m omniret serve --index demo-index

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q

# the default encoder's whole recipe, one command (< 1 h on 2 cores): build the real domains + WordNet, train
# configs/omniret-bridge/train.yaml (resumable), install the result as the packaged omniret-bridge weights
default-model: $(STAMP)
	$(PY) -m omniret data build domains .cache/data/domains --domains noto,twemoji,clipart,openmoji
	$(PY) -m omniret data build wordnet .cache/data/wordnet
	$(PY) -m omniret train configs/omniret-bridge/train.yaml
	rm -rf src/omniret/resources/omniret-bridge && mkdir -p src/omniret/resources/omniret-bridge
	cp .cache/runs/omniret-bridge/final/model.safetensors .cache/runs/omniret-bridge/final/omniret.json \
		src/omniret/resources/omniret-bridge/

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .constraints.txt demo-index
