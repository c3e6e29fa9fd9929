# Two commands do everything on a fresh clone (README Quickstart):
#   make demo   - set up the venv and run the main job (UDPNet, demo profile, built-in data)
#   make test   - set up the venv and run the test suite (.ci/run calls this)
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test tables bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: pip then takes the local CPU wheel where one exists (NOTES.md)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,blender]"
	# piq without its torchvision requirement (no CPU torchvision build matches torch 2.13)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "piq==0.8.0"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python experiments/run.py --config udpnet.yaml profile=demo

test: setup
	$(BIN)/python -m pytest -q

tables: setup
	$(BIN)/python ablations/tables.py --all

clean:
	rm -rf $(VENV) runs wandb
