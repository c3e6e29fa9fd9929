"""W&B's own sweep engine, offline: schema check of sweep files and random / bayes proposals.

The W&B sweep controller runs the open-source ``sweeps`` package (github.com/wandb/sweeps, on
PyPI as ``sweeps``): its JSON schema decides what a sweep file may contain and its
``next_runs`` proposes the next points of a ``grid``, ``random`` or ``bayes`` search. Running
the same code here means that a sweep file accepted by ``ablations/sweep.py`` is accepted by
``wandb sweep``, and that ``method: random | bayes`` search offline exactly as online: the
local runner hands the engine the finished points (their parameters, state and the sweep's
``metric`` read from their run folders) and runs what it proposes.

Grid sweeps (the paper tables) keep their own expansion in :mod:`ablations.sweeps.grid` (file order,
stable point ids, so that SLURM array task ``i`` is point ``i``); the engine proposes the same
set of points (``tests/test_sweep_engine.py``). Importing the engine needs no network.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ablations.sweeps.errors import SweepError

METHODS = ("grid", "random", "bayes")


def _engine():
    with warnings.catch_warnings():  # the package's pydantic v1-style Config warns on import
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def schema_errors(doc: Any) -> list[str]:
    """W&B's schema violations of a sweep file's mapping (empty when it is a valid sweep)."""
    if not isinstance(doc, dict):
        return ["a sweep file must be a mapping"]
    return list(_engine().schema_violations_from_proposed_config(doc))


def check_schema(doc: Any, where: str) -> None:
    """Raise :class:`SweepError` naming ``where`` and every W&B schema violation."""
    errors = schema_errors(doc)
    if errors:
        raise SweepError(f"{where}: not a valid W&B sweep ({'; '.join(errors)})")


@dataclass
class PastRun:
    """A point the engine has already proposed: parameters, state and its metric (if any)."""

    name: str
    overrides: dict
    state: str  # finished | failed | running
    metric: Optional[float] = None


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def propose(doc: dict, past: Sequence[PastRun], n: int, seed: int = 0) -> list[dict]:
    """The next ``n`` points of a sweep, as ``{key: value}`` in the file's parameter order.

    Args:
        doc: the sweep file's mapping (``method``, ``parameters``, ``metric`` for bayes).
        past: every point proposed before, in order (bayes fits its Gaussian process to the
            finished ones' ``metric``; failed ones carry no value).
        n: how many points to propose.
        seed: with the number of past points, seeds the engine's random draws, so a rerun
            proposes the same points as long as the results are the same.

    Raises:
        SweepError: the engine refuses the sweep (e.g. bayes without ``metric``).
    """
    sw = _engine()
    metric = (doc.get("metric") or {}).get("name")
    runs = [sw.SweepRun(name=r.name, state=r.state, config={k: {"value": v} for k, v in r.overrides.items()},
                        summary_metrics={metric: r.metric} if metric and r.metric is not None else {})
            for r in past]
    state = (random.getstate(), np.random.get_state())
    random.seed(f"{seed}:{len(past)}")  # the engine draws from the global generators
    np.random.seed((seed * 1_000_003 + len(past)) % 2**32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's GP convergence notes
            proposed = sw.next_runs(doc, runs, validate=True, n=n)
    except Exception as e:  # noqa: BLE001 - jsonschema / ValueError from the engine
        raise SweepError(f"W&B sweep engine: {e}") from e
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    keys = list(doc["parameters"])
    return [{k: _plain(run.config[k]["value"]) for k in keys} for run in proposed if run is not None]
