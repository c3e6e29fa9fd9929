"""`experiments/run.py` with the tiny test method registered (used by subprocess tests; a real
script file so Lightning's `ddp` launcher can re-execute it for the other ranks)."""
import sys

import tiny_method  # noqa: E402,F401
from experiments.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
