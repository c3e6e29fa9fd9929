"""Tests of mfif/ops/decision.py: binarisation (Eq. 8), small-area filter (Eq. 9), map fusion (Eq. 10)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mfif.ops.decision import (
    DecisionPostprocess,
    binarise,
    component_areas,
    compose_sequential_maps,
    connected_components,
    fuse_with_maps,
    small_area_filter,
)


STRUCTURES = {4: None, 8: np.ones((3, 3), dtype=int)}  # scipy's default structure is 4-connected


def _random_masks(b: int, h: int, w: int, seed: int, smooth: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 1, h, w, generator=g)
    blurred = torch.nn.functional.avg_pool2d(noise, smooth, 1, smooth // 2, count_include_pad=False)
    return (blurred > 0.5).float()


def _same_partition(ours: np.ndarray, ref: np.ndarray) -> bool:
    """Labels are equal up to renaming: a bijection between our labels and scipy's."""
    fg = ref > 0
    if not np.array_equal(ours > 0, fg):
        return False
    pairs = set(zip(ours[fg].tolist(), ref[fg].tolist()))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def _reference_filter(binary: np.ndarray, ratio: float, connectivity: int) -> np.ndarray:
    """Eq. 9 with scipy.ndimage.label, one image at a time."""
    out = binary.copy()
    min_area = ratio * binary.shape[0] * binary.shape[1]
    for cls in (0, 1):
        labels, _ = ndimage.label(binary == cls, structure=STRUCTURES[connectivity])
        sizes = np.bincount(labels.ravel())
        small = (sizes[labels] < min_area) & (labels > 0)
        out[small] = 1 - cls
    return out


# ---------------------------------------------------------------------------------- binarise
def test_binarise_known_values_strict_inequality():
    m = torch.tensor([0.0, 0.3, 0.5, 0.5001, 1.0]).view(1, 1, 1, 5)
    assert binarise(m, 0.5).flatten().tolist() == [0, 0, 0, 1, 1]  # Eq. 8: M > 0.5
    assert binarise(m, 0.25).flatten().tolist() == [0, 1, 1, 1, 1]


def test_binarise_degenerate_thresholds_from_logits():
    logits = torch.tensor([-500.0, -90.0, -3.0, 0.0, 4.0, 30.0, 500.0]).view(1, 1, 1, 7)
    assert torch.all(binarise(logits, 0.0, from_logits=True) == 1)  # threshold 0: all source A
    assert torch.all(binarise(logits, 1.0, from_logits=True) == 0)  # threshold 1: all source B
    # Same decisions as thresholding the sigmoid where it is not saturated.
    probs = torch.sigmoid(logits)
    for t in (0.25, 0.5, 0.75):
        assert torch.equal(binarise(logits, t, from_logits=True), binarise(probs, t))


def test_binarise_degenerate_thresholds_on_probabilities():
    probs = torch.rand(2, 1, 9, 7) * 0.98 + 0.01
    assert torch.all(binarise(probs, 0.0) == 1)
    assert torch.all(binarise(torch.ones(1, 1, 3, 3), 1.0) == 0)  # strict: 1 > 1 is false


def test_binarise_errors():
    with pytest.raises(ValueError, match="threshold"):
        binarise(torch.rand(1, 1, 4, 4), 1.5)
    with pytest.raises(ValueError, match=r"\[\*, 1, H, W\]"):
        binarise(torch.rand(1, 2, 4, 4))
    with pytest.raises(TypeError, match="decision"):
        binarise(np.zeros((1, 1, 4, 4)))


# ---------------------------------------------------------------------- connected components
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("size", [(17, 23), (1, 9), (32, 31)])
def test_connected_components_match_scipy(connectivity, size):
    masks = _random_masks(3, *size, seed=size[0] + connectivity)
    labels = connected_components(masks, connectivity)
    assert labels.shape == masks.shape and labels.dtype == torch.int64
    for i in range(3):
        ref, _ = ndimage.label(masks[i, 0].numpy(), structure=STRUCTURES[connectivity])
        assert _same_partition(labels[i, 0].numpy(), ref)
    # labels never collide across the batch
    per_image = [set(labels[i].unique().tolist()) - {0} for i in range(3)]
    assert not (per_image[0] & per_image[1]) and not (per_image[1] & per_image[2])


def test_diagonal_touch_differs_between_connectivities():
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert connected_components(m, 8).unique().numel() == 2  # background + one region
    assert connected_components(m, 4).unique().numel() == 3  # background + two regions
    assert component_areas(m, 8).flatten().tolist() == [2, 0, 0, 2]
    assert component_areas(m, 4).flatten().tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(m, 6)


# ------------------------------------------------------------------------ small-area filter
def _constructed_map() -> tuple[torch.Tensor, torch.Tensor]:
    """40 x 50 map (2000 px; ratio 0.01 -> regions under 20 px flip) and its expected filtered map.

    Regions are at least 2 px apart, so 4- and 8-connectivity agree.
    """
    b = np.zeros((40, 50), dtype=np.float32)
    exp = np.zeros_like(b)
    b[10:30, 15:45] = 1; exp[10:30, 15:45] = 1      # big foreground block (600 px), kept
    b[14:16, 20:22] = 0                              # 4 px hole inside it -> flipped to 1
    b[20:24, 30:35] = 0; exp[20:24, 30:35] = 0       # 20 px hole (= 0.01 H W, not smaller): kept
    b[3:6, 25:28] = 1                                # 9 px interior island -> flipped to 0
    b[0:2, 0:5] = 1                                  # 10 px island touching two borders -> 0
    b[36:40, 0:5] = 1; exp[36:40, 0:5] = 1           # 20 px island on the border: kept
    b[0:1, 45:50] = 1; b[1:4, 48:50] = 1             # 5 + 6 = 11 px corner island -> 0
    b[34:40, 20:40] = 1; exp[34:40, 20:40] = 1       # 120 px foreground touching the bottom edge
    b[37:40, 28:31] = 0                              # 9 px background pocket on the border -> 1
    b[24:27, 3:9] = 1                                # 18 px island (19 would still flip) -> 0
    return torch.from_numpy(b).view(1, 1, 40, 50), torch.from_numpy(exp).view(1, 1, 40, 50)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_small_area_filter_flips_exactly_small_regions(connectivity):
    b, expected = _constructed_map()
    out = small_area_filter(b, 0.01, connectivity)
    assert out.shape == b.shape and out.dtype == b.dtype
    assert torch.equal(out, expected)
    # the result agrees with a scipy.ndimage.label reference
    ref = _reference_filter(b[0, 0].numpy(), 0.01, connectivity)
    assert np.array_equal(out[0, 0].numpy(), ref)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_small_area_filter_matches_scipy_reference_batched(connectivity):
    maps = _random_masks(4, 29, 37, seed=7, smooth=5)
    out = small_area_filter(maps, 0.02, connectivity)
    for i in range(4):
        ref = _reference_filter(maps[i, 0].numpy(), 0.02, connectivity)
        assert np.array_equal(out[i, 0].numpy(), ref)
    # batching does not mix images
    assert torch.equal(small_area_filter(maps[1:2], 0.02, connectivity), out[1:2])


def test_small_area_filter_trivial_cases_and_errors():
    ones = torch.ones(2, 1, 8, 8)
    assert torch.equal(small_area_filter(ones), ones)  # one region of area H*W is never small
    assert torch.equal(small_area_filter(torch.zeros(1, 1, 5, 5)), torch.zeros(1, 1, 5, 5))
    b, _ = _constructed_map()
    assert torch.equal(small_area_filter(b, 0.0), b)  # ratio 0 disables the filter
    assert torch.equal(small_area_filter(b.bool(), 0.01), small_area_filter(b, 0.01).bool())
    with pytest.raises(ValueError, match="only 0 and 1"):
        small_area_filter(torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="area_ratio"):
        small_area_filter(ones, 2.0)


def test_postprocess_module_equals_functions():
    logits = torch.randn(2, 1, 24, 24) * 4
    post = DecisionPostprocess(0.5, 0.05, 8, from_logits=True)
    expected = small_area_filter(binarise(logits, 0.5, from_logits=True), 0.05, 8)
    assert torch.equal(post(logits), expected)
    assert "area_ratio=0.05" in repr(post)


# --------------------------------------------------------------------------- map fusion
def test_fuse_with_maps_eq10_known_values():
    a = torch.full((1, 3, 2, 2), 0.8)
    c = torch.full((1, 3, 2, 2), 0.2)
    d = torch.tensor([[1.0, 0.0], [0.25, 1.0]]).view(1, 1, 2, 2)
    fused = fuse_with_maps(torch.stack([a, c], 1), torch.stack([d, 1 - d], 1))
    expected = a * d + c * (1 - d)  # Eq. 10, every colour channel with the same map
    assert fused.shape == (1, 3, 2, 2)
    assert torch.allclose(fused, expected)
    assert torch.allclose(fused[0, :, 1, 0], torch.full((3,), 0.35))


def test_fuse_with_maps_errors_and_gradient():
    src = torch.rand(2, 3, 1, 5, 5)
    maps = torch.rand(2, 3, 1, 5, 5, requires_grad=True)
    fuse_with_maps(src, maps).sum().backward()
    assert torch.allclose(maps.grad, src)
    with pytest.raises(ValueError, match="do not match"):
        fuse_with_maps(src, torch.rand(2, 2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"\[B, N, 1, H, W\]"):
        fuse_with_maps(src, torch.rand(2, 3, 3, 5, 5))
    with pytest.raises(ValueError, match="sources"):
        fuse_with_maps(src[0], maps)


def test_compose_sequential_maps_three_sources():
    d1 = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)  # keep S0 vs S1
    d2 = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)  # keep F1 vs S2
    maps = compose_sequential_maps([d1, d2])
    assert maps.shape == (1, 3, 1, 1, 4)
    assert maps[0, :, 0, 0].T.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]
    soft = compose_sequential_maps([torch.rand(2, 1, 3, 3) for _ in range(4)])
    assert torch.allclose(soft.sum(1), torch.ones(2, 1, 3, 3))
    with pytest.raises(ValueError, match="at least one"):
        compose_sequential_maps([])
