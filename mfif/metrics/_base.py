"""Base class of the no-reference fusion metrics: a batched, DDP-synchronised mean."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from mfif.metrics._common import check_nr_inputs


class NoReferenceMetric(Metric):
    """Mean over images of a per-image fusion score ``score(fused, sources) -> [B]``.

    Subclasses implement :meth:`score` (pure tensor code, float64) and set
    ``higher_is_better``. ``update`` accepts float images in [0, 1] or uint8.

    Shape:
        - fused: :math:`(B, C, H, W)`, C in {1, 3}
        - sources: :math:`(B, N, C, H, W)`, N >= 2
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Per-image values ``[B]`` (float64)."""
        raise NotImplementedError

    def update(self, fused: Tensor, sources: Tensor) -> None:
        check_nr_inputs(fused, sources)
        with torch.no_grad():
            values = self.score(fused.detach(), sources.detach())
        self.total += values.sum().to(self.total)
        self.count += values.numel()

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return self.total / self.count
