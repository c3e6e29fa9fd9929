"""Focus activity measures: box sums and spatial frequency (SF), written once for all papers.

* :func:`box_sum` - per-channel sum over a ``(2r+1) x (2r+1)`` window with zero padding, for
  any number of channels in one call (no per-channel Python loops).
* :func:`spatial_frequency_activity` - the pixel-wise SF of deep features used by SESF-Fuse and
  GACN (GACN Eqs. 1-3, Sec. 3.1.1): squared differences to the neighbouring pixel in each
  direction, summed over the window.
* :func:`spatial_frequency` - the classic image-level SF of Eskicioglu & Fisher (1995) used as a
  fusion metric and as the activity of SF-based fusion (Li et al. 2001).
* :func:`sf_comparison` - GACN's ``sigmoid(k (SF_A - SF_B))`` for training: the inference forward
  pass with a hand-written backward pass (same values up to float rounding, far less memory and time).

The pixel-wise SF follows the released GACN/SESF code rather than the literal Eq. 3:
``normalize=False`` (default) returns the raw window sum ``RF^2 + CF^2``, without the square
root and the ``1/(2r+1)^2`` factor; the decision ``sigmoid(k * (SF_A - SF_B))`` of the released
weights was trained on that scale. ``normalize=True`` gives Eq. 3 exactly.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfif.ops.checks import check_shape
from mfif.ops.conv import activate, conv2d_activation

BoxMethod = Literal["conv", "cumsum"]


def _check_4d(x: Tensor, name: str) -> None:
    check_shape(x, name, "B C H W")


def box_sum(
    x: Tensor, radius: int, method: BoxMethod = "conv", scale: float = 1.0, activation: Optional[str] = None
) -> Tensor:
    """Sum of each channel over a ``(2r+1) x (2r+1)`` window, zero padding (same output size).

    Both methods give the same values (up to float rounding) for all channels at once:

    * ``"conv"``: separable depthwise convolutions with ones kernels (a ``k x 1`` pass, then a
      ``1 x k`` pass), run in channels-last layout when there is more than one channel: exact
      window sums without cancellation. Fastest CPU path measured (torch 2.13, 2 threads,
      ``ablations/gacn/table3.py``): on 1 x 64 x 520 x 520 the separable pair takes about 0.7 of
      the time of one ``k x k`` depthwise convolution; on 4-channel maps channels-last is ~5x
      faster than NCHW. Summed-area tables and ``avg_pool2d`` were slower;
    * ``"cumsum"``: summed-area table (two cumulative sums and differences), cost independent of
      the radius; float32 tables lose precision by cancellation as the side grows, so float32
      (and half) inputs are summed in float64 and cast back.

    Args:
        x: input ``[B, C, H, W]``.
        radius: window radius ``r >= 0``.
        method: ``"conv"`` or ``"cumsum"``.
        scale: factor applied to the sums (folded into the kernel for ``"conv"``: one pass less
            when the caller needs ``scale * box_sum(x)``, e.g. GACN's ``k * (SF_A - SF_B)``).
        activation: None, ``"relu"`` or ``"sigmoid"`` applied to the scaled sums (fused into the
            last convolution for ``"conv"`` when no gradient is needed, see :mod:`mfif.ops.conv`).

    Returns:
        ``activation(scale * window sums)``, shape and dtype of ``x``.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    _check_4d(x, "x")
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    if radius == 0:
        return activate(x * scale if scale != 1.0 else x, activation)
    k = 2 * radius + 1
    if method == "conv":
        c = x.shape[1]
        if c > 1:
            x = x.contiguous(memory_format=torch.channels_last)
        rows = x.new_full((c, 1, 1, k), float(scale))
        cols = x.new_ones(c, 1, k, 1)
        # columns first: the k x 1 pass is the slower one and the activation is cheaper fused
        # into the 1 x k pass (measured on 1 x 64 x 520 x 520, torch 2.13)
        return conv2d_activation(F.conv2d(x, cols, padding=(radius, 0), groups=c), rows, padding=(0, radius),
                                 groups=c, activation=activation)
    if method == "cumsum":
        work = x if x.dtype == torch.float64 else x.double()
        p = F.pad(work, (radius + 1, radius, radius + 1, radius))  # a leading zero row/col for the table
        s = p.cumsum(-1)
        s = s[..., k:] - s[..., :-k]
        s = s.cumsum(-2)
        s = s[..., k:, :] - s[..., :-k, :]
        if scale != 1.0:
            s = s * scale
        return activate(s.to(x.dtype), activation)
    raise ValueError(f"method must be 'conv' or 'cumsum', got '{method}'")


def neighbour_energy(x: Tensor, direction: Literal["backward", "forward"] = "backward") -> Tensor:
    """Per-pixel ``dr^2 + dc^2``: squared differences to the horizontal and vertical neighbour.

    ``"backward"`` (GACN Eqs. 1-2 and the released GACN/SESF code): ``dr = x[m, n] - x[m, n-1]``,
    ``dc = x[m, n] - x[m-1, n]``, the missing neighbour of the first column/row being 0 (zero
    padding). ``"forward"``: ``x[m, n+1] - x[m, n]`` and ``x[m+1, n] - x[m, n]`` (right/lower
    neighbour), 0 beyond the last column/row. Keeps the memory format (channels_last stays so).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    _check_4d(x, "x")
    if direction not in ("backward", "forward"):
        raise ValueError(f"direction must be 'backward' or 'forward', got '{direction}'")
    e = x.square()  # the border terms: difference to a zero neighbour
    if direction == "backward":
        e[..., :, 1:] = (x[..., :, 1:] - x[..., :, :-1]).square_()
        e[..., 1:, :] += (x[..., 1:, :] - x[..., :-1, :]).square_()
        e[..., 0, :] += x[..., 0, :].square()
    else:
        e[..., :, :-1] = (x[..., :, 1:] - x[..., :, :-1]).square_()
        e[..., :-1, :] += (x[..., 1:, :] - x[..., :-1, :]).square_()
        e[..., -1, :] += x[..., -1, :].square()
    return e


def _rows_band(groups: list[Tensor], lo: int, hi: int) -> Tensor:
    """Rows ``lo:hi`` of the channel concatenation of ``groups`` (small: built per band)."""
    parts = [g[:, :, lo:hi] for g in groups]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _band_energy(x: Tensor, has_previous_row: bool) -> Tensor:
    """Backward ``dr^2 + dc^2`` of a band of rows; ``x`` carries the row above when there is one."""
    rows = x[:, :, 1:] if has_previous_row else x
    e = torch.empty_like(rows)
    e[..., 0] = rows[..., 0]  # zero neighbour left of the first column
    torch.sub(rows[..., 1:], rows[..., :-1], out=e[..., 1:])
    e.mul_(e)
    dc = torch.empty_like(rows)
    if has_previous_row:
        torch.sub(x[:, :, 1:], x[:, :, :-1], out=dc)
    else:  # zero neighbour above the first row
        dc[:, :, 0] = rows[:, :, 0]
        torch.sub(rows[:, :, 1:], rows[:, :, :-1], out=dc[:, :, 1:])
    return e.addcmul_(dc, dc)


def neighbour_energy_difference(
    a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor], band_bytes: int = 1 << 21
) -> Tensor:
    """``neighbour_energy(A) - neighbour_energy(B)`` (backward differences, GACN Eqs. 1-2).

    ``a`` and ``b`` are feature tensors or lists of channel groups (``A = cat(a, dim=1)``, e.g. the
    layers of a dense block), so the concatenation is never built. Without autograd the result is
    computed in bands of rows of about ``band_bytes`` per source, which keeps the six
    elementwise passes on cache-resident data: on 2 x 64 x 520 x 520 features this is about 3x
    faster than the whole-image composition (torch 2.13, 2 CPU threads). With autograd recording
    it is the plain differentiable composition. Same values up to float rounding.

    Args:
        a, b: ``[B, C, H, W]`` tensors or sequences of ``[B, C_i, H, W]`` groups, same total ``C``.
        band_bytes: approximate size of one band of one source.

    Returns:
        ``E_A - E_B``, ``[B, C, H, W]`` (channels-last in the banded form).

    Shape:
        - a, b: :math:`(B, C, H, W)` or groups :math:`(B, C_i, H, W)` with :math:`\\sum C_i = C`
        - output: :math:`(B, C, H, W)`
    """
    ga = [a] if isinstance(a, Tensor) else list(a)
    gb = [b] if isinstance(b, Tensor) else list(b)
    for name, groups in (("a", ga), ("b", gb)):
        if not groups:
            raise ValueError(f"{name} must be a tensor or a non-empty sequence of tensors")
        for t in groups:
            _check_4d(t, name)
    shape = ga[0].shape
    ca, cb = sum(t.shape[1] for t in ga), sum(t.shape[1] for t in gb)
    if ca != cb or any(t.shape[0] != shape[0] or t.shape[-2:] != shape[-2:] for t in ga + gb):
        raise ValueError(f"a and b must share B, H, W and the channel total, got {[tuple(t.shape) for t in ga]} "
                         f"and {[tuple(t.shape) for t in gb]}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in ga + gb):
        return neighbour_energy(torch.cat(ga, 1)) - neighbour_energy(torch.cat(gb, 1))
    n, _, h, w = shape
    out = torch.empty((n, ca, h, w), dtype=ga[0].dtype, device=ga[0].device, memory_format=torch.channels_last)
    rows = max(2, band_bytes // max(1, n * ca * w * ga[0].element_size()))
    for r0 in range(0, h, rows):
        r1, lo = min(h, r0 + rows), max(r0 - 1, 0)
        e_a = _band_energy(_rows_band(ga, lo, r1), r0 > 0)
        e_b = _band_energy(_rows_band(gb, lo, r1), r0 > 0)
        torch.sub(e_a, e_b, out=out[:, :, r0:r1])
    return out


def _energy_backward(x: Tensor, grad: Tensor, sign: float) -> Tensor:
    """``sign * d<grad, E(x)>/dx`` for the backward neighbour energy ``E = dr^2 + dc^2``.

    With ``u = grad * dr`` and ``v = grad * dc`` (zero neighbours outside), the derivative is
    ``2 (u[m, n] - u[m, n+1] + v[m, n] - v[m+1, n])``: each difference enters the energy of its
    own pixel with ``+`` and that of its right / lower neighbour with ``-``.
    """
    d = torch.empty_like(x)
    d[..., 0] = x[..., 0]
    torch.sub(x[..., 1:], x[..., :-1], out=d[..., 1:])  # dr
    u = d.mul_(grad)
    out = u.clone()
    out[..., :-1].sub_(u[..., 1:])
    d = torch.empty_like(x)
    d[..., 0, :] = x[..., 0, :]
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=d[..., 1:, :])  # dc
    v = d.mul_(grad)
    out.add_(v)
    out[..., :-1, :].sub_(v[..., 1:, :])
    return out.mul_(2.0 * sign)


class _SFComparison(torch.autograd.Function):
    """``sigmoid(scale * box_sum(E_A - E_B))`` with a hand-written backward (see :func:`sf_comparison`)."""

    @staticmethod
    def forward(ctx, radius: int, scale: float, method: str, n_a: int, *groups: Tensor) -> Tensor:
        # autograd is off inside forward: the banded difference and the fused box sum of inference.
        # Bands of 16 MiB, not 2: a training batch (16 x 64 x 156 x 156) then takes ~10 bands instead
        # of ~50; each band is ~8 parallel regions, and on a loaded machine every region's barrier
        # waits for a descheduled thread (2 threads, load ~14: 0.6 s instead of 2.8 s of CPU).
        s = box_sum(neighbour_energy_difference(groups[:n_a], groups[n_a:], band_bytes=1 << 24), radius, method,
                    scale=scale, activation="sigmoid")
        ctx.radius, ctx.scale, ctx.method, ctx.n_a = radius, scale, method, n_a
        ctx.save_for_backward(s, *groups)
        return s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        s, *groups = ctx.saved_tensors
        # sigmoid' = s (1 - s); the zero-padded box sum is symmetric, hence its own adjoint
        g_diff = box_sum(grad * s * (1 - s), ctx.radius, ctx.method, scale=ctx.scale)
        grads = []
        for side, sign in ((groups[:ctx.n_a], 1.0), (groups[ctx.n_a:], -1.0)):  # E_A - E_B
            c0 = 0
            for t in side:
                need = ctx.needs_input_grad[4 + len(grads)]
                grads.append(_energy_backward(t, g_diff[:, c0:c0 + t.shape[1]], sign) if need else None)
                c0 += t.shape[1]
        return (None, None, None, None, *grads)


def sf_comparison(
    a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor], radius: int = 5, scale: float = 1000.0,
    method: BoxMethod = "conv",
) -> Tensor:
    """GACN's activity comparison ``sigmoid(k (SF_A - SF_B))`` (Sec. 3.1.1, Eqs. 1-2; k = 1000, r = 5).

    ``SF`` is the raw window sum of the backward neighbour energy (:func:`spatial_frequency_activity`
    with ``normalize=False``); ``SF_A - SF_B = box_sum(E_A - E_B)`` (the window sum is linear).
    The forward pass is the inference computation (banded energy difference, one fused box sum);
    the backward pass is written out (:class:`_SFComparison`) and keeps only the features and
    the output: the autograd composition of the same formula stores a dozen 64-channel
    intermediates and spends most of its time in slice assignments, squares and copies (GACN's
    training step at 16 x 156 x 156: 2.8 s with autograd, see ``tests/test_train_speed.py`` and
    the README's "Training speed"). Same values as the composition up to float rounding.

    Args:
        a, b: ``[B, C, H, W]`` tensors or sequences of channel groups (e.g. the dense layers).
        radius: window radius ``r``.
        scale: ``k`` of the sigmoid.
        method: box-sum method (:func:`box_sum`).

    Returns:
        ``[B, C, H, W]`` in (0, 1) (channels-last for more than one channel).

    Shape:
        - a, b: :math:`(B, C, H, W)` or groups :math:`(B, C_i, H, W)` with :math:`\\sum C_i = C`
        - output: :math:`(B, C, H, W)`
    """
    ga = [a] if isinstance(a, Tensor) else list(a)
    gb = [b] if isinstance(b, Tensor) else list(b)
    if not ga or not gb:
        raise ValueError("a and b must be tensors or non-empty sequences of tensors")
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    if method not in ("conv", "cumsum"):
        raise ValueError(f"method must be 'conv' or 'cumsum', got '{method}'")
    return _SFComparison.apply(radius, float(scale), method, len(ga), *ga, *gb)


def spatial_frequency_activity(
    x: Tensor,
    radius: int = 5,
    normalize: bool = False,
    direction: Literal["backward", "forward"] = "backward",
    method: BoxMethod = "conv",
) -> Tensor:
    """Pixel-wise spatial frequency of every channel (GACN Eqs. 1-3, Sec. 3.1.1; r = 5 there).

    ``RF^2 + CF^2`` = window sum of :func:`neighbour_energy`. With ``normalize=True`` the result
    is Eq. 3: ``sqrt((RF^2 + CF^2) / (2r+1)^2)``.

    Comparing two sources: the window sum is linear, so ``SF_A - SF_B`` (``normalize=False``)
    equals ``box_sum(E_A - E_B)``, one box sum instead of two (what GACN does).

    Args:
        x: features ``[B, C, H, W]``.
        radius: window radius ``r`` (GACN: 5).
        normalize: apply Eq. 3's square root and ``1/(2r+1)^2`` (default False = released code).
        direction: neighbour used for the differences (see :func:`neighbour_energy`).
        method: box-sum method (see :func:`box_sum`).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    energy = box_sum(neighbour_energy(x, direction), radius, method)
    if normalize:
        return (energy / float((2 * radius + 1) ** 2)).clamp_min(0).sqrt()
    return energy


def spatial_frequency(x: Tensor) -> Tensor:
    """Image spatial frequency ``SF = sqrt(RF^2 + CF^2)`` (Eskicioglu & Fisher 1995) per channel.

    ``RF^2`` is the mean of the squared horizontal differences ``x[m, n] - x[m, n-1]`` over the
    ``H x (W-1)`` valid pairs, ``CF^2`` the same for vertical differences (no padding).

    Shape:
        - x: :math:`(B, C, H, W)` with H, W >= 2
        - output: :math:`(B, C)`
    """
    _check_4d(x, "x")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"x must be at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    rf2 = (x[..., :, 1:] - x[..., :, :-1]).square().mean(dim=(-2, -1))
    cf2 = (x[..., 1:, :] - x[..., :-1, :]).square().mean(dim=(-2, -1))
    return (rf2 + cf2).sqrt()


class SpatialFrequencyActivity(nn.Module):
    """Module form of :func:`spatial_frequency_activity` (no parameters)."""

    def __init__(self, radius: int = 5, normalize: bool = False, direction: str = "backward",
                 method: BoxMethod = "conv"):
        super().__init__()
        self.radius, self.normalize, self.direction, self.method = radius, normalize, direction, method

    def forward(self, x: Tensor) -> Tensor:
        return spatial_frequency_activity(x, self.radius, self.normalize, self.direction, self.method)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, normalize={self.normalize}, direction={self.direction}, method={self.method}"
