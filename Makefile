# Two commands do everything on a fresh clone (README Quickstart):
#   make demo   - set up the venv and run the main job (UDPNet, demo profile, built-in data)
#   make test   - set up the venv and run the test suite (.ci/run calls this)
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test tables parity gpu-smoke bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: pip then takes the local CPU wheel where one exists
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

# Paper parity (issue 15): printed rows regenerated from released weights and published images.
#   make parity DATA=<test-data dir> WEIGHTS=<released-weights dir> [PARITY_OUT=runs/parity]
PARITY_OUT ?= runs/parity
parity: setup
	@test -n "$(DATA)" -a -n "$(WEIGHTS)" || { echo "error: make parity needs DATA=<dir> WEIGHTS=<dir>" >&2; exit 2; }
	$(BIN)/python ablations/parity.py --data "$(DATA)" --weights "$(WEIGHTS)" --out "$(PARITY_OUT)"

# GPU smoke check (issue 16): every paper's smoke profile on one GPU (bf16-mixed, EMA, channels_last,
# torch.compile), then 2-GPU DDP when there are two; a table of steps/s, peak memory, pass/fail.
# Prints "skipped: no CUDA device" (exit 0) on a machine without CUDA.
gpu-smoke: setup
	$(BIN)/python experiments/benchmarks/gpu_smoke.py

clean:
	rm -rf $(VENV) runs wandb
