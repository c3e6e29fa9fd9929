"""``python ablations/trained.py ...``: the ``mfif-trained`` command run by path (:mod:`ablations.sweeps.trained`)."""
import sys
from pathlib import Path

# run by path, Python puts ablations/ first on sys.path, where the package folder sweeps/ would
# shadow W&B's sweep engine (`import sweeps`): put the repository root there instead
sys.path[0] = str(Path(__file__).resolve().parents[1])

from ablations.sweeps.trained import cli

if __name__ == "__main__":
    sys.exit(cli())
