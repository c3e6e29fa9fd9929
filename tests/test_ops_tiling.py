"""Tiled inference with gradient alpha blending (mfif/ops/tiling.py, VAEEDOF Sec. 3, Fig. 3)."""
import pytest
import torch

from mfif.ops.tiling import TiledApply, blend_ramps, tile_starts, tiled_apply


def per_tile_offset_fn():
    """A tile function whose output depends on the tile: mean of the sources + a tile-specific
    offset. Without blending, the offsets would show up as hard seams at tile borders."""
    calls = {"n": 0}

    def fn(s):
        outs = []
        for t in s:  # one offset per tile in the batch
            calls["n"] += 1
            offset = 0.1 * ((calls["n"] * 7919) % 11) / 10  # in [0, 0.1], differs between tiles
            outs.append(t.mean(0) + offset)
        return torch.stack(outs)

    return fn, calls


def test_tile_starts_cover_axis_with_min_overlap():
    for length, tile, ov in [(1000, 256, 64), (700, 256, 64), (513, 512, 128), (4096, 512, 128), (257, 256, 0)]:
        s = tile_starts(length, tile, ov)
        assert s[0] == 0 and s[-1] == length - tile
        assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))  # overlap >= requested
        assert all(b > a for a, b in zip(s, s[1:]))
    assert tile_starts(100, 256, 64) == [0]
    # 4096 with 512 tiles and 1/4 overlap (Sec. 3): stride <= 384 -> 11 tiles per axis
    assert len(tile_starts(4096, 512, 128)) == 11


def test_blend_ramps_cross_fade_sums_to_one():
    starts = tile_starts(1000, 256, 64)
    ramps = blend_ramps(starts, 256)
    total = torch.zeros(1000, dtype=torch.float64)
    for s, w in zip(starts, ramps):
        assert (w > 0).all() and (w <= 1).all()
        total[s : s + 256] += w
    assert torch.allclose(total, torch.ones_like(total))  # exact partition of unity (2-way overlaps)
    # first tile: no ramp at the image border, linear ramp (constant slope) into the overlap
    assert ramps[0][0] == 1
    d = ramps[0][-60:].diff()
    assert torch.allclose(d, d[0].expand_as(d)) and d[0] < 0


def test_constant_image_1000x700_has_no_seams():
    """A constant-colour image at 1000x700 comes back without seams, also through a function
    whose output differs from tile to tile (blending must hide the per-tile offsets)."""
    colour = torch.tensor([0.2, 0.5, 0.8]).view(1, 1, 3, 1, 1)
    x = colour.expand(1, 2, 3, 700, 1000).contiguous()
    ident = tiled_apply(lambda s: s[:, 0], x, tile=256, overlap=64, tile_batch=3)
    assert ident.shape == (1, 3, 700, 1000)
    assert torch.equal(ident, x[:, 0])  # constant in, constant out, exactly

    fn, calls = per_tile_offset_fn()
    y = tiled_apply(fn, x, tile=256, overlap=64, tile_batch=2)
    assert calls["n"] == len(tile_starts(700, 256, 64)) * len(tile_starts(1000, 256, 64))
    jump_y = (y[..., 1:, :] - y[..., :-1, :]).abs().max()
    jump_x = (y[..., :, 1:] - y[..., :, :-1]).abs().max()
    # offsets differ by up to 0.1 between tiles; spread over >= 64 px the step is <= 0.1/64
    assert max(jump_y, jump_x) < 0.1 / 64 * 1.01
    # without blending (overlap 0, hard cut) the same function leaves a visible seam
    fn2, _ = per_tile_offset_fn()
    hard = tiled_apply(fn2, x, tile=256, overlap=0)
    assert (hard[..., :, 1:] - hard[..., :, :-1]).abs().max() > 0.005


@pytest.mark.parametrize("size", [(37, 53), (129, 67), (64, 64), (300, 211)])
def test_identity_round_trips_exactly_for_odd_sizes(size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 1, *size)
    for tile, ov, tb in [(32, 8, 1), (48, 12, 5), (64, 0, 2)]:
        y = tiled_apply(lambda s: s[:, 1], x, tile=tile, overlap=ov, tile_batch=tb)
        assert y.shape == (2, 1, *size) and y.dtype == x.dtype
        assert torch.equal(y, x[:, 1])  # bit-exact: float64 accumulation, weights sum to 1


def test_image_smaller_than_tile_is_one_call():
    x = torch.rand(1, 3, 3, 20, 30)
    seen = []

    def fn(s):
        seen.append(tuple(s.shape))
        return s.mean(1)

    y = tiled_apply(fn, x, tile=512)
    assert seen == [(1, 3, 3, 20, 30)]
    assert torch.allclose(y, x.mean(1), atol=1e-6)
    # one side longer than the tile, the other shorter
    seen.clear()
    tiled_apply(fn, torch.rand(1, 2, 3, 20, 100), tile=64, overlap=16)
    assert all(s[-2:] == (20, 64) for s in seen) and len(seen) == 2


def test_tile_batch_bounds_fn_input_and_channels_change():
    x = torch.rand(1, 2, 3, 200, 150)
    sizes = []

    def fn(s):
        sizes.append(s.shape[0])
        return s[:, 0, :1] * 2  # 3 -> 1 channel

    y = tiled_apply(fn, x, tile=64, overlap=16, tile_batch=4, device="cpu")
    assert max(sizes) <= 4 and y.shape == (1, 1, 200, 150)
    assert torch.allclose(y, x[:, 0, :1] * 2, atol=1e-6)
    assert torch.allclose(TiledApply(fn, tile=64)(x), y, atol=1e-6)


def test_errors_name_the_problem():
    x = torch.rand(1, 2, 3, 40, 40)
    with pytest.raises(ValueError, match="sources must be"):
        tiled_apply(lambda s: s[:, 0], x[0])
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda s: s[:, 0], x, tile=16, overlap=16)
    with pytest.raises(ValueError, match="tile_batch"):
        tiled_apply(lambda s: s[:, 0], x, tile=16, tile_batch=0)
    with pytest.raises(ValueError, match="fn must return"):
        tiled_apply(lambda s: s[:, 0, :, :8], x, tile=16)
