"""Stand-ins for ``experiments/run.py`` in the sweep runner's tests: tiny scripts that read the
runner's ``key=value`` arguments and write what a real run would (``metrics.csv``), instantly."""
from __future__ import annotations

import textwrap
from pathlib import Path

_HEAD = '''\
"""{doc}"""
import math, os, sys, time
from pathlib import Path

if __name__ != "__main__":
    import tiny_method  # noqa: F401  (registers "tiny" for the runner's config check)
else:
    kv = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    rd = Path(kv["run_dir"])
    rd.mkdir(parents=True, exist_ok=True)
'''


def write_stand_in(path: Path, doc: str, body: str) -> Path:
    """Write a stand-in program: ``body`` runs with ``kv`` (the arguments) and ``rd`` (the run folder)."""
    path.write_text(_HEAD.format(doc=doc) + textwrap.indent(textwrap.dedent(body), "    "))
    return path
