"""Binary Sobel edge maps as MATLAB and Octave ``edge(x)`` compute them, and ``bwmorph`` thinning.

FMI_edge (Haghighat's feature mutual information, :mod:`mfif.metrics.fmi`) scores the binary
``edge(x)`` maps of the images, and the default ``edge(x)`` (Sobel, automatic threshold,
thinning) is not the same function in MATLAB and in GNU Octave:

* **Octave** (image package 2.14, ``edge.m``): keep a pixel above the threshold that is
  strictly greater than both horizontal or both vertical neighbours
  (:func:`mfif.metrics.fmi.octave_sobel_edges`). The canonical ``fmi_edge`` uses it,
  because the project's reference values were computed under Octave.
* **MATLAB** (Image Processing Toolbox ``edge.m``, local function ``computeEdgesWithThinning``
  and its portable code-generation twin ``computeEdgesWithThinningPortable``, as MathWorks
  ships them): non-maximum suppression *along the gradient direction* (:func:`matlab_sobel_edges`).
  Where the horizontal derivative dominates, a pixel must beat its right neighbour and not
  lose to its left one; where the vertical one dominates, the same with the lower and upper
  neighbour. This is what papers scored with MATLAB's ``edge`` (e.g. GACN Table 1) saw.
* ``bwmorph(bw, 'thin', Inf)`` (:func:`bwmorph_thin`), the documented two-subiteration
  thinning of Lam, Lee & Suen (1992, p. 879; Guo & Hall's algorithm A1), is a different
  operation that ``edge`` does not call: offered to compare, not used by any paper variant
  (on GACN's published images it misses the printed FMI_edge by -1.7 %, MATLAB's own thinning
  reproduces it to 1e-6; ``ablations/README.md``).

All functions work on a batch of planes ``[B, H, W]`` of any scale (the threshold is relative).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mfif.metrics._common import filter2

__all__ = ["Thinning", "THINNINGS", "sobel_strength", "matlab_sobel_edges", "bwmorph_thin", "sobel_edges"]

Thinning = Literal["octave", "matlab", "bwmorph", "none"]
THINNINGS = ("octave", "matlab", "bwmorph", "none")

# MATLAB edge.m: op = fspecial('sobel') / 8 (the y-derivative mask; its transpose gives x).
_SOBEL_8 = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64) / 8
# edge.m: "scale = 4" -- cutoff = 4 * mean(b), the RMS noise estimate of Pratt, Digital Image
# Processing, p. 514, cited in edge.m.
_SCALE = 4.0
# computeedge / computeEdgesWithThinningPortable: the direction test is bx >= k*by - 100*eps.
_DIRECTION_TOL = 100 * float(np.finfo(np.float64).eps)


def _check_planes(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"{name} must be a tensor of planes [..., H, W], got {getattr(x, 'shape', type(x))}")


def sobel_strength(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(|bx|, |by|, b)`` of MATLAB ``edge(x, 'sobel')``: ``b = bx^2 + by^2``.

    ``bx = imfilter(x, op', 'replicate')``, ``by = imfilter(x, op, 'replicate')`` with
    ``op = fspecial('sobel') / 8`` (correlation, replicated borders), in float64.

    Shape:
        - x: :math:`(*, H, W)` -> three tensors :math:`(*, H, W)`
    """
    _check_planes(x, "x")
    shape = x.shape
    x = x.to(torch.float64).reshape(-1, *shape[-2:])  # filter2's replicate padding wants [B, H, W]
    k = _SOBEL_8.to(x.device)
    by = filter2(x, k, padding="replicate").abs().reshape(shape)
    bx = filter2(x, k.t().contiguous(), padding="replicate").abs().reshape(shape)
    return bx, by, bx * bx + by * by


def matlab_sobel_edges(x: Tensor) -> Tensor:
    """MATLAB ``edge(x)`` = ``edge(x, 'sobel')``: automatic threshold, directional thinning.

    ``cutoff = 4 mean(b)``; a pixel is an edge where ``b > cutoff`` and

    * ``|bx| >= |by| - 100 eps`` and ``b(r, c-1) <= b(r, c) > b(r, c+1)``, or
    * ``|by| >= |bx| - 100 eps`` and ``b(r-1, c) <= b(r, c) > b(r+1, c)``;

    a comparison with a neighbour outside the image counts as true (MATLAB's border rule).
    Source: MathWorks Image Processing Toolbox ``edge.m`` (``computeEdgesWithThinning``;
    the same rule in ``computeEdgesWithThinningPortable``). On 0..255 integer images every
    quantity is exact in float64 (multiples of 1/64).

    Args:
        x: planes of any scale (MATLAB gets ``double`` images: 0..255 from MEFB's wrappers,
            [0, 1] from ``img_as_float``); only the 100-eps direction tolerance depends on it.

    Returns:
        float64 tensor of 0/1, the shape of ``x``.

    Shape:
        - x: :math:`(*, H, W)` -> :math:`(*, H, W)`
    """
    bx, by, b = sobel_strength(x)
    cutoff = _SCALE * b.mean((-2, -1), keepdim=True)
    low = torch.full_like(b[..., :, :1], -float("inf"))  # outside the image: comparison true
    left = torch.cat([low, b[..., :, :-1]], -1)
    right = torch.cat([b[..., :, 1:], low], -1)
    low = torch.full_like(b[..., :1, :], -float("inf"))
    up = torch.cat([low, b[..., :-1, :]], -2)
    down = torch.cat([b[..., 1:, :], low], -2)
    horizontal = (bx >= by - _DIRECTION_TOL) & (left <= b) & (b > right)
    vertical = (by >= bx - _DIRECTION_TOL) & (up <= b) & (b > down)
    return ((b > cutoff) & (horizontal | vertical)).to(torch.float64)


def bwmorph_thin(bw: Tensor) -> Tensor:
    """MATLAB ``bwmorph(bw, 'thin', Inf)``: thin every 8-connected object to a stroke.

    The two-subiteration algorithm MATLAB documents (Lam, Lee & Suen, IEEE TPAMI 14(9) 1992,
    p. 879; Guo & Hall, Comm. ACM 32(3) 1989): with the neighbours x1..x8 of p numbered
    counter-clockwise from the east one, delete p in the first subiteration when G1, G2 and
    G3 hold, in the second when G1, G2 and G3' hold, until nothing changes:
    G1: X_H(p) = 1 (the crossing number); G2: 2 <= min(n1(p), n2(p)) <= 3;
    G3: (x2 | x3 | ~x8) & x1 = 0; G3': (x6 | x7 | ~x4) & x5 = 0.
    Implemented by :func:`skimage.morphology.thin`, whose two lookup tables are these
    conditions (``tests/test_thinning.py`` rebuilds them from G1-G3' and checks small patterns
    against hand-derived results).

    Shape:
        - bw: :math:`(*, H, W)`, nonzero = foreground -> float64 0/1 :math:`(*, H, W)`
    """
    from skimage.morphology import thin

    _check_planes(bw, "bw")
    flat = (bw != 0).reshape(-1, *bw.shape[-2:]).cpu().numpy()
    out = np.stack([thin(m) for m in flat]) if len(flat) else flat
    return torch.from_numpy(out.astype(np.float64)).reshape(bw.shape).to(bw.device)


def sobel_edges(x: Tensor, thinning: Thinning = "octave") -> Tensor:
    """The binary Sobel edge map of ``edge(x)`` under one ``thinning`` convention.

    ``"octave"``: :func:`~mfif.metrics.fmi.octave_sobel_edges` (the canonical reference);
    ``"matlab"``: :func:`matlab_sobel_edges`; ``"bwmorph"``: ``edge(x, 'sobel', 'nothinning')``
    followed by :func:`bwmorph_thin`; ``"none"``: ``edge(x, 'sobel', 'nothinning')``
    (``b > 4 mean(b)``).

    Shape:
        - x: :math:`(*, H, W)` -> float 0/1 :math:`(*, H, W)`
    """
    if thinning not in THINNINGS:
        raise ValueError(f"thinning must be one of {THINNINGS}, got '{thinning}'")
    if thinning == "octave":
        from mfif.metrics.fmi import octave_sobel_edges

        _check_planes(x, "x")
        return octave_sobel_edges(x)
    if thinning == "matlab":
        return matlab_sobel_edges(x)
    _, _, b = sobel_strength(x)
    raw = (b > _SCALE * b.mean((-2, -1), keepdim=True)).to(torch.float64)
    return bwmorph_thin(raw) if thinning == "bwmorph" else raw
