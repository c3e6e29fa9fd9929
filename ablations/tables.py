"""``python ablations/tables.py ...``: the ``mfif-tables`` command run by path (:mod:`ablations.sweeps.tables`)."""
import sys

from ablations.sweeps.tables import main

if __name__ == "__main__":
    sys.exit(main())
