"""``python ablations/parity.py ...``: the ``mfif-parity`` command run by path (:mod:`ablations.sweeps.parity`)."""
import sys

from ablations.sweeps.parity import cli

if __name__ == "__main__":
    sys.exit(cli())
