"""Decision-map helpers shared by map-based fusion methods: binarisation, small-area filter, fusion.

The post-processing of MSASN (Sec. 3.5, Eqs. 8-10), written once for every method that turns a
soft focus map into a hard decision map:

* :func:`binarise` - Eq. 8, ``B = 1`` where ``M > threshold``;
* :func:`small_area_filter` - Eq. 9, connected regions (of either class) smaller than
  ``area_ratio * H * W`` pixels are flipped;
* :func:`fuse_with_maps` - Eq. 10 generalised to N sources, ``F = sum_n maps_n * sources_n``,
  applied to every colour channel independently;
* :func:`compose_sequential_maps` - per-source maps of a pairwise sequential fusion of N sources.

Everything is batched torch and runs on any device: connected components come from
:func:`kornia.contrib.connected_components_union_find` (exact, runs to convergence, unlike the
fixed-iteration max-pooling :func:`kornia.contrib.connected_components`, which splits regions
wider than its iteration count).
"""
from __future__ import annotations

from typing import Sequence

import torch
from kornia.contrib import connected_components_union_find
from torch import Tensor, nn

from mfif.ops.checks import check_shape

# Eq. 8 (Sec. 3.5.1) and Eq. 9 (Sec. 3.5.2) of MSASN.
DEFAULT_THRESHOLD = 0.5
DEFAULT_AREA_RATIO = 0.01
CONNECTIVITIES = (4, 8)


def _check_map(x: Tensor, name: str) -> None:
    check_shape(x, name, "* 1 H W")


def binarise(decision: Tensor, threshold: float = DEFAULT_THRESHOLD, from_logits: bool = False) -> Tensor:
    """Hard decision map of Eq. 8: 1 where the map is strictly above ``threshold``.

    Eq. 8 uses a strict ``>`` (the prose of Sec. 3.5.1 says ``>=``; we follow the equation). With
    the strict comparison, ``threshold = 1`` gives the all-zero map for any map in [0, 1].
    ``threshold = 0`` gives the all-one map except where the map is exactly 0; a sigmoid output
    underflows to exactly 0 for logits below about -88 in float32, so pass the logits with
    ``from_logits=True`` for exact degenerate maps: logits are compared with
    ``logit(threshold)``, which is -inf at 0 and +inf at 1 (same result as
    ``sigmoid(z) > threshold`` without the rounding of the sigmoid).

    Args:
        decision: soft decision map in [0, 1] (or logits with ``from_logits``).
        threshold: binarisation threshold in [0, 1] (Eq. 8: 0.5).
        from_logits: ``decision`` holds logits instead of probabilities.

    Returns:
        The binary map as ``decision``'s floating dtype, values in {0, 1}.

    Shape:
        - decision: :math:`(*, 1, H, W)`
        - output: :math:`(*, 1, H, W)`
    """
    _check_map(decision, "decision")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    dtype = decision.dtype if decision.is_floating_point() else torch.float32
    if from_logits:
        cut = torch.logit(torch.tensor(float(threshold), dtype=torch.float64)).item()  # -inf / +inf at 0 / 1
        return (decision > cut).to(dtype)
    return (decision > threshold).to(dtype)


def _four_connected_lattice(mask: Tensor) -> Tensor:
    """Embed a ``[M, H, W]`` mask in a ``(2H-1) x (2W-1)`` grid whose 8-connectivity is the 4-connectivity of ``mask``.

    Pixel (i, j) goes to (2i, 2j); the node between two 4-neighbours is set when both are set;
    odd-odd nodes stay empty. Any two 8-adjacent nodes of the new grid then share a source
    pixel, so 8-connected labelling of the lattice = 4-connected labelling of ``mask``.
    """
    m, h, w = mask.shape
    lattice = mask.new_zeros((m, 2 * h - 1, 2 * w - 1))
    lattice[:, ::2, ::2] = mask
    lattice[:, ::2, 1::2] = mask[:, :, :-1] & mask[:, :, 1:]
    lattice[:, 1::2, ::2] = mask[:, :-1, :] & mask[:, 1:, :]
    return lattice


def connected_components(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Exact connected-component labels of a batch of binary masks.

    Args:
        mask: foreground where ``mask`` is 1 (or True).
        connectivity: 8 (pixels touching at a corner are connected, kornia's native
            convention) or 4 (edge neighbours only; scipy's and scikit-image's default).

    Returns:
        int64 labels, 0 on the background; labels are unique across the whole batch but not
        contiguous.

    Shape:
        - mask: :math:`(*, 1, H, W)`
        - output: :math:`(*, 1, H, W)`
    """
    _check_map(mask, "mask")
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    h, w = mask.shape[-2:]
    flat = (mask == 1).reshape(-1, h, w)
    if connectivity == 8 or flat.numel() == 0:
        return connected_components_union_find(flat.unsqueeze(1)).reshape(mask.shape)
    labels = connected_components_union_find(_four_connected_lattice(flat).unsqueeze(1))
    return labels[:, 0, ::2, ::2].reshape(mask.shape)


def component_areas(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Area (pixel count) of the connected component each foreground pixel belongs to; 0 elsewhere.

    Shape:
        - mask: :math:`(*, 1, H, W)`
        - output: :math:`(*, 1, H, W)` int64
    """
    labels = connected_components(mask, connectivity)
    counts = torch.bincount(labels.flatten())
    return counts[labels] * (labels > 0)


def small_area_filter(
    binary_map: Tensor, area_ratio: float = DEFAULT_AREA_RATIO, connectivity: int = 8
) -> Tensor:
    """Flip every connected region smaller than ``area_ratio * H * W`` pixels (Eq. 9, Sec. 3.5.2).

    Regions of both classes are examined on the input map ``B`` and flipped at once, exactly as
    Eq. 9 is written (``D = 1 - B`` on small regions of ``B``): small islands of 1 become 0 and
    small holes of 0 become 1. Regions touching the image border are ordinary regions: their
    area is the pixel count inside the image. SESF-Fuse's reference post-processing (Keep-Passion/SESF-Fuse)
    removes small objects and then small holes (with morphological opening/closing around them);
    the simultaneous flip differs from such a sequential one only where small regions of opposite
    classes touch (e.g. a small hole inside a small island). ``area_ratio = 0`` disables the filter.

    Args:
        binary_map: decision map with values in {0, 1}.
        area_ratio: minimal region area as a fraction of ``H * W`` (Eq. 9: 0.01).
        connectivity: 8 (default; kornia's native labelling) or 4 (scikit-image's default,
            used by SESF-Fuse's ``remove_small_objects``).

    Returns:
        The filtered map ``D``, same dtype as ``binary_map``.

    Shape:
        - binary_map: :math:`(*, 1, H, W)`
        - output: :math:`(*, 1, H, W)`
    """
    _check_map(binary_map, "binary_map")
    if not 0.0 <= float(area_ratio) <= 1.0:
        raise ValueError(f"area_ratio must lie in [0, 1], got {area_ratio}")
    if not bool(((binary_map == 0) | (binary_map == 1)).all()):
        raise ValueError("binary_map must contain only 0 and 1 (binarise it first)")
    if area_ratio == 0 or binary_map.numel() == 0:
        return binary_map.clone()
    h, w = binary_map.shape[-2:]
    min_area = float(area_ratio) * h * w  # Eq. 9: area(B_region) < 0.01 * H * W
    ones = binary_map == 1
    area = torch.where(ones, component_areas(ones, connectivity), component_areas(~ones, connectivity))
    small = area < min_area
    return torch.where(small, (~ones).to(binary_map.dtype), binary_map)


def fuse_with_maps(sources: Tensor, maps: Tensor) -> Tensor:
    """Weighted fusion ``F = sum_n maps_n * sources_n`` per channel (Eq. 10 for N sources).

    For two sources and ``maps = [D, 1 - D]`` this is Eq. 10, ``F = A * D + C * (1 - D)``;
    the single-channel maps are broadcast over the colour channels (Sec. 3.5.3: the R, G and
    B channels are fused independently with the same map). Maps are expected to sum to 1
    over N; that is not checked.

    Shape:
        - sources: :math:`(B, N, C, H, W)`
        - maps: :math:`(B, N, 1, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    if not isinstance(sources, Tensor) or not isinstance(maps, Tensor):
        raise TypeError("sources and maps must be torch.Tensors")
    if sources.dim() != 5:
        raise ValueError(f"sources must have shape [B, N, C, H, W], got {tuple(sources.shape)}")
    if maps.dim() != 5 or maps.shape[2] != 1:
        raise ValueError(f"maps must have shape [B, N, 1, H, W], got {tuple(maps.shape)}")
    b, n, _, h, w = sources.shape
    if (maps.shape[0], maps.shape[1], maps.shape[3], maps.shape[4]) != (b, n, h, w):
        raise ValueError(
            f"maps {tuple(maps.shape)} do not match sources {tuple(sources.shape)} in B, N, H or W"
        )
    return (maps * sources).sum(1)


def compose_sequential_maps(step_maps: Sequence[Tensor]) -> Tensor:
    """Per-source maps of a pairwise sequential fusion ``F_k = D_k * F_{k-1} + (1 - D_k) * S_k``.

    With ``F_0 = S_0``, source 0 keeps ``prod_k D_k`` and source ``j >= 1`` keeps
    ``(1 - D_j) * prod_{k > j} D_k``; the maps sum to 1 and are binary when every ``D_k`` is.

    Args:
        step_maps: the N - 1 step maps ``D_1 .. D_{N-1}`` (1 where the running fusion is kept).

    Shape:
        - step_maps: N - 1 tensors :math:`(B, 1, H, W)`
        - output: :math:`(B, N, 1, H, W)`
    """
    if len(step_maps) == 0:
        raise ValueError("step_maps must hold at least one map (N >= 2 sources)")
    weights = [torch.ones_like(step_maps[0])]
    for d in step_maps:
        _check_map(d, "step_maps[k]")
        weights = [wi * d for wi in weights] + [1 - d]
    return torch.stack(weights, 1)


class DecisionPostprocess(nn.Module):
    """Binarisation (Eq. 8) followed by the small-area filter (Eq. 9).

    Args:
        threshold: Eq. 8 threshold (0.5).
        area_ratio: Eq. 9 area fraction (0.01).
        connectivity: 4 or 8, see :func:`small_area_filter`.
        from_logits: the input holds logits (exact degenerate maps at thresholds 0 and 1).

    Shape:
        - input: :math:`(*, 1, H, W)`
        - output: :math:`(*, 1, H, W)` in {0, 1}
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        area_ratio: float = DEFAULT_AREA_RATIO,
        connectivity: int = 8,
        from_logits: bool = False,
    ):
        super().__init__()
        if connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.threshold, self.area_ratio = float(threshold), float(area_ratio)
        self.connectivity, self.from_logits = int(connectivity), bool(from_logits)

    def forward(self, decision: Tensor) -> Tensor:
        binary = binarise(decision, self.threshold, self.from_logits)
        return small_area_filter(binary, self.area_ratio, self.connectivity)

    def extra_repr(self) -> str:
        return (f"threshold={self.threshold}, area_ratio={self.area_ratio}, "
                f"connectivity={self.connectivity}, from_logits={self.from_logits}")
