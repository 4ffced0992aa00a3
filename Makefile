# `make run` serves the shipped model on http://127.0.0.1:5000 with the Procfile's stack (gunicorn through bin/web and
# gunicorn.conf.py: its worker class, deadlines and inference slots), only to this machine; `make test` runs the
# test suite. `python app.py` is Flask's development server, without any of that.
# Both create .venv (Python 3.11, see .python-version) and install the pinned requirements first: on Linux pip's
# torch is the CUDA build, about 6.4 GB; without an NVIDIA GPU take the CPU-only wheels instead:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make install
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test
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

test: install
	$(BIN)/python -m pytest
