"""Fusing N >= 2 sources with GACN: decision calibration (Sec. 3.3, Eq. 19) and the serial strategy.

* **Serial** (Sec. 3.3, Fig. 3 top; released ``multi_fuse_origin``): fuse source 1 with 2, the
  result with 3, ... - ``2 (N-1)`` feature-path runs and ``N-1`` decision-path runs. Because each
  step is the linear blend of Eq. 5, the final weights compose exactly:
  ``w_1 = prod_j m_j``, ``w_j = (1 - m_j) prod_{k>j} m_k``, so colour sources can be fused with
  the maps afterwards (the gray of the running fusion equals the blend of the sources' grays).
* **Calibration** (Fig. 3 bottom; released ``multi_fuse_calibration``): source 1 is the
  reference; the SF activity of every source is computed once (``N`` feature-path runs) and the
  ``N-1`` decision paths compare source 1 with source j, giving final maps ``p^j``. The decision
  volume of Eq. 19 is ``DV^1 = p^2``, ``DV^2 = 1 - p^2``, ``DV^j = p^2 (1 - p^j) / p^j``
  (``+1e-4`` in the denominator, released code), and the per-pixel argmax picks the source.

For N = 2 both strategies return the pairwise soft map ``[p, 1 - p]`` (the decision volume of
N = 2 *is* that map; the argmax would only discard the guided-filter boundary).

Memory: only the reference's features are kept; the others are computed and dropped two by two.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.gacn.network import GACNNet
from mfif.ops.checks import check_shape

STRATEGIES = ("calibration", "serial")


def _check(sources: Tensor) -> None:
    check_shape(sources, "sources", "B N 1 H W", N=2)  # gray, N >= 2


def decision_volume(pairwise: Tensor, eps: float = 1e-4) -> Tensor:
    """Eq. 19 decision volume from the reference-vs-j final maps.

    Args:
        pairwise: ``[B, N-1, 1, H, W]``, entry ``j-2`` = ``p^j`` (source 1 against source j).
        eps: denominator guard of the released code.

    Returns:
        ``[B, N, 1, H, W]`` relative clarity of every source.

    Shape:
        - pairwise: :math:`(B, N-1, 1, H, W)`
        - output: :math:`(B, N, 1, H, W)`
    """
    if pairwise.dim() != 5 or pairwise.shape[1] < 1:
        raise ValueError(f"pairwise must be [B, N-1, 1, H, W] with N >= 2, got {tuple(pairwise.shape)}")
    p2 = pairwise[:, :1]
    rest = p2 * (1 - pairwise[:, 1:]) / (pairwise[:, 1:] + eps)
    return torch.cat([p2, 1 - p2, rest], 1)


def one_hot_argmax(volume: Tensor) -> Tensor:
    """Per-pixel argmax over the source axis as one-hot maps (first index wins ties).

    Shape:
        - volume: :math:`(B, N, 1, H, W)`
        - output: :math:`(B, N, 1, H, W)` in {0, 1}, summing to 1 over N
    """
    idx = volume.argmax(1, keepdim=True)
    return torch.zeros_like(volume).scatter_(1, idx, 1.0)


def calibration_maps(net: GACNNet, sources: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Decision calibration (Sec. 3.3): N feature-path runs, N-1 decision-path runs.

    Returns:
        ``(maps, volume)``: one-hot maps (N >= 3; soft pairwise maps for N = 2) and the Eq. 19
        decision volume, both ``[B, N, 1, H, W]``.

    Shape:
        - sources: :math:`(B, N, 1, H, W)` gray
        - output: two :math:`(B, N, 1, H, W)`
    """
    _check(sources)
    b, n = sources.shape[:2]
    ref = sources[:, 0]
    f_ref = net.features.layers(ref)  # the reference's features: computed once
    # Eval mode: two sources per feature-path call (BatchNorm uses running statistics, so the
    # result is the same; the serial strategy batches its pair the same way).
    step = 1 if net.training else 2
    finals = []
    for j in range(1, n, step):
        chunk = sources[:, j:j + step]  # [B, k, 1, H, W]
        layers = net.features.layers(chunk.transpose(0, 1).reshape(-1, *chunk.shape[2:]))
        for i in range(chunk.shape[1]):
            f_j = [t[i * b:(i + 1) * b] for t in layers]
            finals.append(net.decide(net.activity(f_ref, f_j), ref, chunk[:, i]).final)
    volume = decision_volume(torch.stack(finals, 1), eps)
    if sources.shape[1] == 2:
        return volume, volume
    return one_hot_argmax(volume), volume


def serial_maps(net: GACNNet, sources: Tensor) -> Tensor:
    """One-by-one serial fusion (Sec. 3.3): ``2 (N-1)`` feature-path runs, ``N-1`` decisions.

    Returns:
        Composed per-source weights ``[B, N, 1, H, W]`` (sum to 1 over N).

    Shape:
        - sources: :math:`(B, N, 1, H, W)` gray
        - output: :math:`(B, N, 1, H, W)`
    """
    _check(sources)
    n = sources.shape[1]
    weights = [torch.ones_like(sources[:, 0])]
    running = sources[:, 0]
    for j in range(1, n):
        src = sources[:, j]
        m = net(running, src).final  # the running fusion's features are recomputed every step
        weights = [w * m for w in weights] + [1 - m]
        running = m * running + (1 - m) * src  # Eq. 5
    return torch.stack(weights, 1)


def fuse_maps(net: GACNNet, sources: Tensor, strategy: str = "calibration") -> Tensor:
    """Maps ``[B, N, 1, H, W]`` for N >= 2 gray sources with the chosen strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"model.multi_strategy must be one of {STRATEGIES}, got '{strategy}'")
    _check(sources)
    if sources.shape[1] == 2:
        p = net(sources[:, 0], sources[:, 1]).final
        return torch.stack([p, 1 - p], 1)
    if strategy == "calibration":
        return calibration_maps(net, sources)[0]
    return serial_maps(net, sources)
