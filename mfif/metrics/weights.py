"""Which metrics need network weight files, and are those files here? (checked before any run).

LPIPS, DISTS and PieAPP read pre-trained networks from a torch-hub style folder and never
download them (:mod:`mfif.metrics._piq`). A run that scores them must learn that a file is
missing before it trains for hours, not when the test metrics are built: run.py and the sweep
runner call :func:`check_metric_weights` with the run's metric list first thing, and the sweep
smoke profile uses :func:`missing_metric_weights` to drop such metrics with a note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

from mfif.config import ConfigError
from mfif.metrics._piq import WEIGHT_FILES, WEIGHTS_ENV, weights_dir
from mfif.metrics.registry import metric_spec

__all__ = ["MetricWeightsError", "metric_weight_files", "missing_metric_weights", "check_metric_weights"]


class MetricWeightsError(ConfigError):
    """Weight files of some requested metrics are absent (exit code 2 in the CLIs)."""


def metric_weight_files(name: str) -> tuple[str, ...]:
    """The weight file names metric ``name`` needs (empty for metrics without a network).

    Raises:
        KeyError: ``name`` is not a registered metric.
    """
    factory = metric_spec(name).factory
    return tuple(WEIGHT_FILES[w][0] for w in getattr(factory, "_weights", ()))


def missing_metric_weights(names: Iterable[str], directory: Optional[Union[str, Path]] = None) -> dict[str, list[Path]]:
    """``{metric: [missing file paths]}`` for the metrics of ``names`` whose weights are absent.

    Args:
        names: metric registry names (e.g. a config's ``metrics`` list).
        directory: the weights folder; default ``$MFIF_WEIGHTS_DIR``, else torch's hub dir.
    """
    root = weights_dir(directory) / "checkpoints"
    missing: dict[str, list[Path]] = {}
    for name in names:
        files = [root / f for f in metric_weight_files(name) if not (root / f).is_file()]
        if files:
            missing[name] = files
    return missing


def check_metric_weights(names: Iterable[str], directory: Optional[Union[str, Path]] = None) -> None:
    """Raise one clear error if any metric of ``names`` lacks its weight files.

    Raises:
        MetricWeightsError: naming every missing file, the metrics needing it and ``MFIF_WEIGHTS_DIR``.
    """
    missing = missing_metric_weights(names, directory)
    if not missing:
        return
    files = sorted({p for paths in missing.values() for p in paths})
    urls = {WEIGHT_FILES[k][0]: WEIGHT_FILES[k][1] for k in WEIGHT_FILES}
    listed = "; ".join(f"{p} (from {urls[p.name]})" for p in files)
    raise MetricWeightsError(
        f"metrics {sorted(missing)} need weight files that are missing: {listed}. Nothing is downloaded at run "
        f"time: put the files in <weights dir>/checkpoints/ and set {WEIGHTS_ENV}=<weights dir>, "
        f"or remove these metrics from 'metrics'")
