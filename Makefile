# `make run` serves the shipped model on http://127.0.0.1:5000 with the Procfile's stack (gunicorn through bin/web and
# gunicorn.conf.py: its worker class, front door and inference slots), only to this machine; `make check` is the
# daily loop (ruff, then the tests not marked slow); `make test` runs the whole test suite. `python app.py` is
# Flask's development server, without any of that.
# Each creates .venv (Python 3.11, see .python-version) and installs the pinned requirements first: on Linux pip's
# torch is the CUDA build, about 6.4 GB; without an NVIDIA GPU take the CPU-only wheels instead:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make install
# `make run-slim` serves the ONNX twin (models/export.onnx) the same way from .venv-slim, which has ONNX Runtime,
# Pillow and NumPy but no torch or fastai (requirements-slim.txt, a few hundred MB): what a 512 MB dyno runs best.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SLIM_VENV := .venv-slim
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run check test install-slim run-slim
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	# the project itself, editable: the commands mask-train, mask-evaluate and mask-export-onnx (pyproject.toml)
	$(BIN)/pip install --no-deps --no-build-isolation --editable .
	touch $@

# the Procfile's web command, with this venv's Python (bin/web starts gunicorn with the Python that runs it)
run: install
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python bin/web app:app --config gunicorn.conf.py

install-slim: $(SLIM_VENV)/.installed

$(SLIM_VENV)/.installed: requirements-slim.txt
	test -x $(SLIM_VENV)/bin/python || $(PYTHON) -m venv $(SLIM_VENV)
	$(SLIM_VENV)/bin/pip install -r requirements-slim.txt
	touch $@

run-slim: install-slim
	HOST=$(HOST) PORT=$(PORT) MODEL_PATH=models/export.onnx $(SLIM_VENV)/bin/python bin/web app:app --config gunicorn.conf.py

check: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

test: install
	$(BIN)/python -m pytest

# On-device mode's runtime (ONNX Runtime Web), vendored under maskclassifier/web/static/vendor/ from npm; run by hand
# to change the pin (not in CI): make vendor-ort ORT_WEB_VERSION=1.18.0
ORT_WEB_VERSION ?= 1.18.0
.PHONY: vendor-ort
vendor-ort:
	sh scripts/vendor_ort.sh $(ORT_WEB_VERSION)
