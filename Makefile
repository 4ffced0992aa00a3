# `make run` serves the shipped model on http://127.0.0.1:5000 ; `make test` runs the test suite.
# Both create .venv (Python 3.11, see .python-version) and install the pinned requirements first: on Linux pip's
# torch is the CUDA build, about 6.4 GB; without an NVIDIA GPU take the CPU-only wheels instead:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make install
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	# the project itself, editable: the commands mask-train, mask-evaluate and mask-export-onnx (pyproject.toml)
	$(BIN)/pip install --no-deps --no-build-isolation --editable .
	touch $@

run: install
	$(BIN)/python app.py

test: install
	$(BIN)/python -m pytest

# On-device mode's runtime (ONNX Runtime Web), vendored under maskclassifier/web/static/vendor/ from npm; run by hand
# to change the pin (not in CI): make vendor-ort ORT_WEB_VERSION=1.18.0
ORT_WEB_VERSION ?= 1.18.0
.PHONY: vendor-ort
vendor-ort:
	sh scripts/vendor_ort.sh $(ORT_WEB_VERSION)
