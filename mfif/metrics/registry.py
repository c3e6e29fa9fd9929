"""Metric registry: lower-case snake_case names -> torchmetrics ``Metric`` factories.

Two kinds:

* ``"nr"`` (no-reference fusion metrics): ``update(fused, sources)`` with
  fused ``[B, C, H, W]`` and sources ``[B, N, C, H, W]`` in [0, 1];
* ``"fr"`` (full-reference): ``update(fused, gt)`` with both ``[B, C, H, W]`` in [0, 1].

Every metric also declares whether higher is better (``higher_is_better``), used by ARank
and the tables. A metric whose ideal is a finite value (Q_SF: 0) also declares ``optimum``;
ranking then uses the distance to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Tuple

from torchmetrics import Metric, MetricCollection


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "nr" | "fr"
    factory: Callable[[], Metric]
    higher_is_better: bool = True
    optimum: Optional[float] = None  # ideal value when neither "higher" nor "lower" is right
    variant_of: Optional[str] = None  # canonical metric this one re-implements under a paper's convention

    def rank_key(self, value: float) -> float:
        """A number where *larger is better*, for ranking (ARank)."""
        if self.optimum is not None:
            return -abs(value - self.optimum)
        return value if self.higher_is_better else -value


_METRICS: Dict[str, MetricSpec] = {}


def register_metric(
    name: str, kind: str, higher_is_better: bool = True, optimum: Optional[float] = None, variant_of: Optional[str] = None
):
    """Decorator registering a zero-argument factory (or Metric class) under ``name``.

    ``variant_of`` marks a per-paper convention variant of a canonical metric
    (:mod:`mfif.metrics.conventions`); variants are not in the default metric sets.
    """
    if kind not in ("nr", "fr"):
        raise ValueError(f"metric kind must be 'nr' or 'fr', got '{kind}'")
    if variant_of is not None and variant_of not in _METRICS:
        raise ValueError(f"metric '{name}': variant_of='{variant_of}' is not a registered metric")

    def deco(factory):
        _METRICS[name] = MetricSpec(name, kind, factory, higher_is_better, optimum, variant_of)
        return factory

    return deco


def metric_names() -> list[str]:
    return sorted(_METRICS)


def metric_spec(name: str) -> MetricSpec:
    if name not in _METRICS:
        import difflib

        close = difflib.get_close_matches(name, list(_METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown metric '{name}'{hint}; known: {metric_names()}")
    return _METRICS[name]


def build_metric(name: str) -> Metric:
    return metric_spec(name).factory()


def build_metric_collections(names: Iterable[str]) -> Tuple[MetricCollection, MetricCollection]:
    """Split ``names`` into (no-reference, full-reference) MetricCollections."""
    nr, fr = {}, {}
    for n in names:
        spec = metric_spec(n)
        (nr if spec.kind == "nr" else fr)[n] = spec.factory()
    return MetricCollection(nr, compute_groups=False), MetricCollection(fr, compute_groups=False)
