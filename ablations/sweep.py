"""``python ablations/sweep.py ...``: the ``mfif-sweep`` command run by path (:mod:`ablations.sweeps.sweep`)."""
import sys

from ablations.sweeps.sweep import main

if __name__ == "__main__":
    sys.exit(main())
