# Two commands do everything on a fresh clone (README Quickstart):
#   make demo   - set up the venv and run the main job (UDPNet, demo profile, built-in data)
#   make test   - set up the venv and run the whole test suite, as CI does (.ci/run calls only this)
#   make test-fast - the suite without the SLURM cluster and the slow tests (no root, no SLURM needed)
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast slurm-packages tables parity trained gpu-smoke bench clean

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

# The suite on 2 pytest-xdist workers, one test file per worker at a time (--dist loadfile): module
# fixtures (fitted checkpoints, renders, metric tables) are built once, and the SLURM tests share
# one cluster in one worker.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: slurm-packages setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slurm and not slow"

# tests/test_slurm.py starts a one-node SLURM cluster (tests/slurm_cluster.py): it needs root and
# these Debian packages. Installed here when missing (root + apt-get); otherwise make test stops
# at once, before anything else, with one line saying what to do.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
SLURM_PROGRAMS := munged mungekey slurmctld slurmd sbatch srun squeue sinfo scontrol scancel
slurm-packages:
	@missing=""; for p in $(SLURM_PROGRAMS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "error: make test runs the SLURM cluster tests, which need root$${missing:+ and the packages $(SLURM_PACKAGES) (missing:$$missing)}; as root: make test, or without SLURM: make test-fast" >&2; exit 2; \
	elif [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null 2>&1 || { echo "error: make test needs the SLURM packages $(SLURM_PACKAGES) (missing:$$missing) and there is no apt-get to install them; install them, or run make test-fast" >&2; exit 2; }; \
		echo "installing $(SLURM_PACKAGES) for the SLURM tests (missing:$$missing)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null; } \
			|| { echo "error: apt-get install $(SLURM_PACKAGES) failed; install them, or run make test-fast" >&2; exit 2; }; \
	fi

tables: setup
	$(BIN)/python ablations/tables.py --all

# Paper parity (issue 15): printed rows regenerated from released weights and published images.
#   make parity DATA=<test-data dir> WEIGHTS=<released-weights dir> [PARITY_OUT=runs/parity]
PARITY_OUT ?= runs/parity
parity: setup
	@test -n "$(DATA)" -a -n "$(WEIGHTS)" || { echo "error: make parity needs DATA=<dir> WEIGHTS=<dir>" >&2; exit 2; }
	$(BIN)/python ablations/parity.py --data "$(DATA)" --weights "$(WEIGHTS)" --out "$(PARITY_OUT)"

# Trained here (issue 24): each paper trained with its cpu profile, tested, scored beside released
# weights, published images and printed rows; then the report ablations/trained.md.
#   make trained DATA=<data dir> WEIGHTS=<released-weights dir> [PAPER=gacn] [TRAINED_OUT=runs/trained]
#                [TRAINED_LONGER=runs/trained_2x]   (a longer run's folder, shown beside each paper's row)
TRAINED_OUT ?= runs/trained
trained: setup
	@test -n "$(DATA)" -a -n "$(WEIGHTS)" || { echo "error: make trained needs DATA=<dir> WEIGHTS=<dir>" >&2; exit 2; }
	$(BIN)/python ablations/trained.py --data "$(DATA)" --weights "$(WEIGHTS)" --out "$(TRAINED_OUT)" \
		$(if $(PAPER),--paper $(PAPER)) --report ablations/trained.md $(if $(TRAINED_LONGER),--longer $(TRAINED_LONGER))

# GPU smoke check (issue 16): every paper's smoke profile on one GPU (bf16-mixed, EMA, channels_last,
# torch.compile), then 2-GPU DDP when there are two; a table of steps/s, peak memory, pass/fail.
# Prints "skipped: no CUDA device" (exit 0) on a machine without CUDA.
gpu-smoke: setup
	$(BIN)/python experiments/benchmarks/gpu_smoke.py

clean:
	rm -rf $(VENV) runs wandb
