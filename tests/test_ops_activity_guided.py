"""Shared ops: box sums, spatial frequency (mfif.ops.activity) and the guided filter +
boundary-guided refinement (mfif.ops.guided_filter), checked against small numpy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfif.ops.activity import (
    SpatialFrequencyActivity,
    box_sum,
    neighbour_energy,
    neighbour_energy_difference,
    spatial_frequency,
    spatial_frequency_activity,
)
from mfif.ops.guided_filter import (
    GuidedFilter,
    gaussian_blur_zero_padded,
    boundary_guided_refinement,
    boundary_weight,
    box_mean_clipped,
    guided_filter,
)


# ----------------------------------------------------------------------------- numpy references
def np_box_sum(x: np.ndarray, r: int) -> np.ndarray:
    """Zero-padded window sums by explicit loops over the window offsets."""
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)])
    out = np.zeros_like(x, dtype=np.float64)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += p[..., dy:dy + h, dx:dx + w]
    return out


def np_box_mean_clipped(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the in-image part of each window, pixel by pixel (He's reference definition)."""
    h, w = x.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean()
    return out


def np_guided(I: np.ndarray, p: np.ndarray, r: int, eps: float, mean) -> np.ndarray:
    """He et al. 2013, Algorithm 1, with a given window-mean function."""
    mI, mp = mean(I, r), mean(p, r)
    a = (mean(I * p, r) - mI * mp) / (mean(I * I, r) - mI * mI + eps)
    b = mp - a * mI
    return mean(a, r) * I + mean(b, r)


def np_reflect_mean(x: np.ndarray, r: int) -> np.ndarray:
    p = np.pad(x, r, mode="reflect")
    return np_box_sum(p, r)[r:-r, r:-r] / (2 * r + 1) ** 2


# ----------------------------------------------------------------------------- box sums
@pytest.mark.parametrize("method", ["conv", "cumsum"])
@pytest.mark.parametrize("r", [0, 1, 2, 5])
def test_box_sum_matches_numpy(method, r):
    x = torch.rand(2, 3, 13, 9, dtype=torch.float64)
    out = box_sum(x, r, method)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.numpy(), np_box_sum(x.numpy(), r), rtol=1e-10, atol=1e-10)


def test_box_sum_float32_methods_agree_and_keep_dtype():
    x = torch.rand(1, 4, 40, 33)
    a, b = box_sum(x, 5, "conv"), box_sum(x, 5, "cumsum")
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["conv", "cumsum"])
def test_box_sum_scale_is_folded_in(method):
    x = torch.rand(1, 3, 12, 10, dtype=torch.float64)
    torch.testing.assert_close(box_sum(x, 2, method, scale=1000.0), 1000.0 * box_sum(x, 2, method))
    torch.testing.assert_close(box_sum(x, 0, method, scale=3.0), 3.0 * x)


def test_box_sum_window_larger_than_image():
    x = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    np.testing.assert_allclose(box_sum(x, 5, "cumsum").numpy(), np.full((1, 1, 3, 4), 12.0))


def test_box_sum_errors():
    with pytest.raises(ValueError, match="radius"):
        box_sum(torch.rand(1, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="method"):
        box_sum(torch.rand(1, 1, 4, 4), 1, "fft")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        box_sum(torch.rand(4, 4), 1)


# ----------------------------------------------------------------------------- spatial frequency
def test_neighbour_energy_backward_and_forward_known_values():
    x = torch.tensor([[1.0, 3.0], [4.0, 8.0]]).view(1, 1, 2, 2)
    # backward: dr = [[1, 2], [4, 4]], dc = [[1, 3], [3, 5]]
    torch.testing.assert_close(neighbour_energy(x, "backward")[0, 0], torch.tensor([[2.0, 13.0], [25.0, 41.0]]))
    # forward: dr = [[2, -3], [4, -8]], dc = [[3, 5], [-4, -8]]
    torch.testing.assert_close(neighbour_energy(x, "forward")[0, 0], torch.tensor([[13.0, 34.0], [32.0, 128.0]]))


def test_neighbour_energy_keeps_channels_last_and_has_gradients():
    x = torch.rand(2, 4, 6, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    e = neighbour_energy(x)
    assert e.is_contiguous(memory_format=torch.channels_last)
    e.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("band_bytes", [1, 300, 1 << 21])  # 2-row bands, a few bands, one band
@pytest.mark.parametrize("channels_last", [False, True])
def test_neighbour_energy_difference_equals_whole_image_form(band_bytes, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    groups_a = [torch.rand(2, c, 13, 11, dtype=torch.float64).contiguous(memory_format=fmt) for c in (2, 3, 1)]
    groups_b = [torch.rand(2, c, 13, 11, dtype=torch.float64).contiguous(memory_format=fmt) for c in (3, 3)]
    want = neighbour_energy(torch.cat(groups_a, 1)) - neighbour_energy(torch.cat(groups_b, 1))
    got = neighbour_energy_difference(groups_a, groups_b, band_bytes=band_bytes)
    assert got.shape == (2, 6, 13, 11) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(neighbour_energy_difference(torch.cat(groups_a, 1), groups_b[0].repeat(1, 2, 1, 1),
                                                           band_bytes=band_bytes),
                               neighbour_energy(torch.cat(groups_a, 1)) - neighbour_energy(groups_b[0].repeat(1, 2, 1, 1)))


def test_neighbour_energy_difference_known_value_gradient_and_errors():
    x = torch.tensor([[1.0, 3.0], [4.0, 8.0]]).view(1, 1, 2, 2)
    # E(x) = [[2, 13], [25, 41]] (see the backward known values above); E(0) = 0
    torch.testing.assert_close(neighbour_energy_difference(x, torch.zeros_like(x))[0, 0],
                               torch.tensor([[2.0, 13.0], [25.0, 41.0]]))
    a = torch.rand(1, 2, 5, 6, requires_grad=True)
    d = neighbour_energy_difference([a[:, :1], a[:, 1:]], torch.rand(1, 2, 5, 6))
    d.sum().backward()  # autograd recording: the differentiable composition
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="channel total"):
        neighbour_energy_difference(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="non-empty"):
        neighbour_energy_difference([], torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        neighbour_energy_difference(torch.rand(4, 4), torch.rand(4, 4))


def test_spatial_frequency_activity_matches_eq_1_to_3():
    x = torch.rand(1, 2, 11, 12, dtype=torch.float64)
    xn = np.pad(x.numpy()[0], ((0, 0), (1, 0), (1, 0)))  # zero row/column before the image
    rf2 = (xn[:, 1:, 1:] - xn[:, 1:, :-1]) ** 2  # Eq. 1: DF(m, n) - DF(m, n-1)
    cf2 = (xn[:, 1:, 1:] - xn[:, :-1, 1:]) ** 2  # Eq. 2: DF(m, n) - DF(m-1, n)
    raw = np_box_sum(rf2 + cf2, 2)
    np.testing.assert_allclose(spatial_frequency_activity(x, 2)[0].numpy(), raw, rtol=1e-10)
    eq3 = np.sqrt(raw / 25.0)  # Eq. 3
    np.testing.assert_allclose(spatial_frequency_activity(x, 2, normalize=True)[0].numpy(), eq3, rtol=1e-10)
    module = SpatialFrequencyActivity(radius=2)
    torch.testing.assert_close(module(x), spatial_frequency_activity(x, 2))


def test_sf_difference_is_one_box_sum_of_energy_difference():
    a, b = torch.rand(1, 3, 16, 15, dtype=torch.float64), torch.rand(1, 3, 16, 15, dtype=torch.float64)
    diff = spatial_frequency_activity(a, 5) - spatial_frequency_activity(b, 5)
    torch.testing.assert_close(box_sum(neighbour_energy(a) - neighbour_energy(b), 5), diff)


def test_image_spatial_frequency_known_values():
    ramp = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]).view(1, 1, 2, 3)
    # RF^2 = mean of 1^2 = 1, CF^2 = 0 -> SF = 1
    torch.testing.assert_close(spatial_frequency(ramp), torch.ones(1, 1))
    checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(spatial_frequency(checker), torch.full((1, 1), 2.0**0.5))
    with pytest.raises(ValueError, match="2x2"):
        spatial_frequency(torch.rand(1, 1, 1, 5))


# ----------------------------------------------------------------------------- guided filter
def test_box_mean_clipped_matches_reference():
    x = torch.rand(1, 1, 9, 7, dtype=torch.float64)
    np.testing.assert_allclose(box_mean_clipped(x, 3)[0, 0].numpy(), np_box_mean_clipped(x[0, 0].numpy(), 3),
                               rtol=1e-10)


@pytest.mark.parametrize("r,eps", [(1, 1e-3), (3, 0.1)])
def test_guided_filter_clip_matches_numpy_reference(r, eps):
    g = torch.rand(1, 1, 12, 10, dtype=torch.float64)
    p = (torch.rand(1, 1, 12, 10, dtype=torch.float64) > 0.5).double()
    ref = np_guided(g[0, 0].numpy(), p[0, 0].numpy(), r, eps, np_box_mean_clipped)
    np.testing.assert_allclose(guided_filter(g, p, r, eps)[0, 0].numpy(), ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(guided_filter(g, p, r, eps, method="cumsum")[0, 0].numpy(), ref, rtol=1e-9, atol=1e-10)


def test_guided_filter_kornia_border_matches_numpy_reflect():
    g = torch.rand(1, 1, 14, 11, dtype=torch.float64)
    p = torch.rand(1, 1, 14, 11, dtype=torch.float64)
    ref = np_guided(g[0, 0].numpy(), p[0, 0].numpy(), 2, 0.01, np_reflect_mean)
    np.testing.assert_allclose(guided_filter(g, p, 2, 0.01, border="reflect")[0, 0].numpy(), ref, rtol=1e-8)


def test_guided_filter_properties():
    g = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    const = torch.full((2, 3, 10, 10), 0.3, dtype=torch.float64)
    torch.testing.assert_close(guided_filter(g, const, 2, 0.1), const)  # constants are preserved
    p = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    # guidance = input, eps -> 0: the filter is (nearly) the identity
    torch.testing.assert_close(guided_filter(p[:, :1], p[:, :1], 2, 1e-10), p[:, :1], atol=1e-5, rtol=0)
    # a huge eps turns it into a double clipped box mean of the input
    torch.testing.assert_close(guided_filter(g, p, 2, 1e9), box_mean_clipped(box_mean_clipped(p, 2), 2))
    torch.testing.assert_close(GuidedFilter(2, 0.1)(g, p), guided_filter(g, p, 2, 0.1))


def test_guided_filter_errors():
    g, p = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="border"):
        guided_filter(g, p, 2, 0.1, border="mirror")
    with pytest.raises(ValueError, match="eps"):
        guided_filter(g, p, 2, 0.0)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(g, p, 0, 0.1)
    with pytest.raises(ValueError, match="share"):
        guided_filter(g, torch.rand(1, 1, 8, 9), 2, 0.1)
    with pytest.raises(ValueError, match="gray guidance"):
        guided_filter(torch.rand(1, 3, 8, 8), p, 2, 0.1)


# ----------------------------------------------------------------------------- boundary refinement
def test_gaussian_blur_matches_kornia_and_released_kernel():
    import kornia.filters as KF

    x = torch.rand(2, 1, 15, 12, dtype=torch.float64)
    ours = gaussian_blur_zero_padded(x, 9, 8.0)
    torch.testing.assert_close(ours, KF.gaussian_blur2d(x, (9, 9), (8.0, 8.0), border_type="constant"))
    # released GaussBlur: exp(-(x^2 + y^2) / (2 sigma^2)) on a 9x9 grid, normalised, zero padding
    r = torch.arange(-4, 5, dtype=torch.float64)
    k = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 128.0)
    ref = torch.nn.functional.conv2d(x, (k / k.sum()).view(1, 1, 9, 9), padding=4)
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur_zero_padded(x, 8, 1.0)


def test_boundary_weight_known_values():
    g = torch.tensor([0.0, 0.05, 0.1, 0.5, 0.8, 0.9, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 1 - abs(0.15 - 2 * 0.0025 - 1), 1.0, 1.0, 1.0, 1 - abs(2 * 0.81 - 0.9), 0.0],
                            dtype=torch.float64)
    torch.testing.assert_close(boundary_weight(g), expected)
    with pytest.raises(ValueError, match="low < high"):
        boundary_weight(g, 0.8, 0.1)


def test_boundary_guided_refinement_changes_only_the_boundary_band():
    m = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    m[..., :, :20] = 1  # vertical edge at column 20
    guide = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    final, weight = boundary_guided_refinement(m, guide)
    assert final.shape == weight.shape == m.shape
    # far from the edge the Gaussian (9x9) sees a flat map: weight 0, map unchanged
    torch.testing.assert_close(final[..., 10:30, :10], m[..., 10:30, :10])
    torch.testing.assert_close(final[..., 10:30, 30:], m[..., 10:30, 30:])
    assert (weight[..., 20, 18:22] == 1).all()  # the edge lies in the [0.1, 0.8] band
    assert (final[..., 20, 18:22] - m[..., 20, 18:22]).abs().max() > 1e-3  # and is smoothed there
    assert final.min() >= -1e-6 and final.max() <= 1 + 1e-6


def test_boundary_guided_refinement_is_differentiable():
    m = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    guide = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    final, _ = boundary_guided_refinement(m, guide, radius=2)
    final.sum().backward()
    assert m.grad is not None and torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        boundary_guided_refinement(torch.rand(1, 2, 8, 8), torch.rand(1, 1, 8, 8))


def test_boundary_refinement_under_bf16_autocast_keeps_map_dtype():
    """bf16-mixed training (make gpu-smoke) runs GACN's refinement under autocast: the box sums come
    back in bf16 while the map is fp32, and the lerp must still work and stay close to fp32."""
    from mfif.ops.guided_filter import boundary_guided_refinement

    g = torch.Generator().manual_seed(0)
    m, guide = torch.rand(1, 1, 40, 40, generator=g), torch.rand(1, 1, 40, 40, generator=g)
    ref, _ = boundary_guided_refinement(m, guide)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = boundary_guided_refinement(m, guide)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05
