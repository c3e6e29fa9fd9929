"""Sobel edge maps with MATLAB's, Octave's and bwmorph's thinning (mfif.metrics.edges).

Expected maps are derived by hand in the comments from the documented rules:

* MATLAB ``edge(x, 'sobel')``: ``op = fspecial('sobel') / 8``, replicated borders,
  ``b = bx^2 + by^2``, ``cutoff = 4 mean(b)``, directional thinning (a neighbour outside the
  image loses every comparison);
* ``bwmorph(bw, 'thin')``: Lam, Lee & Suen (1992) two-subiteration conditions G1, G2, G3 / G3'
  as MATLAB's documentation states them (neighbours x1..x8 counter-clockwise from the east).
"""
from __future__ import annotations

import pytest
import torch

from mfif.metrics.edges import bwmorph_thin, matlab_sobel_edges, sobel_edges, sobel_strength
from mfif.metrics.fmi import octave_sobel_edges


def _step(w: int = 10, h: int = 5, at: int = 5, level: float = 8.0) -> torch.Tensor:
    """Columns < at are 0, columns >= at are ``level`` (one image, [1, h, w])."""
    x = torch.zeros(1, h, w, dtype=torch.float64)
    x[..., at:] = level
    return x


# ----------------------------------------------------------------------------- MATLAB edge
def test_sobel_strength_of_a_step_by_hand():
    # |bx| = |x(c+1) - x(c-1)| / 2 along a row (the 1-2-1 column weights sum to 4, /8): 4 at
    # columns 4 and 5, 0 elsewhere; by = 0 (every row is the same, replicated borders).
    bx, by, b = sobel_strength(_step())
    want = torch.zeros(1, 5, 10, dtype=torch.float64)
    want[..., 4:6] = 4.0
    assert torch.equal(bx, want) and torch.equal(by, torch.zeros_like(by)) and torch.equal(b, want * want)


def test_matlab_edge_keeps_one_column_of_a_step():
    # cutoff = 4 mean(b) = 4 * (2 * 16 / 10) = 12.8 < 16, so columns 4 and 5 pass the threshold.
    # |bx| >= |by|: horizontal rule b(c-1) <= b(c) > b(c+1):
    #   column 4: 0 <= 16 but 16 > 16 fails; column 5: 16 <= 16 and 16 > 0 -> the only edge.
    e = matlab_sobel_edges(_step())
    want = torch.zeros(1, 5, 10, dtype=torch.float64)
    want[..., 5] = 1.0
    assert torch.equal(e, want)
    # Octave's rule wants b strictly greater than both neighbours: the tie leaves no edge at all.
    assert octave_sobel_edges(_step()).sum() == 0
    assert torch.equal(sobel_edges(_step(), "octave"), octave_sobel_edges(_step()))
    # Without thinning both columns stay.
    raw = sobel_edges(_step(), "none")
    assert raw[0].sum(0).tolist() == [0, 0, 0, 0, 5, 5, 0, 0, 0, 0]


def test_matlab_edge_border_rule_and_symmetry():
    # Bright last column: |bx| = 4 at columns 8 and 9 (replicated border), b = 16 > 12.8.
    # Column 8: 16 > b(9) = 16 fails; column 9: its right neighbour is outside the image, which
    # counts as true -> edge. Octave compares with 0 outside and also needs 16 > 16 on the left.
    x = _step(at=9)
    e = matlab_sobel_edges(x)
    assert e[0].sum(0).tolist() == [0] * 9 + [5]
    assert octave_sobel_edges(x).sum() == 0
    # The rules are symmetric under transposition (bx <-> by, left/right <-> up/down).
    assert torch.equal(matlab_sobel_edges(x.transpose(-1, -2)), e.transpose(-1, -2))


def test_matlab_edge_is_scale_free_and_batched():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (3, 17, 23), generator=g).to(torch.float64)
    e = matlab_sobel_edges(x)
    assert e.shape == x.shape and set(e.unique().tolist()) <= {0.0, 1.0} and e.sum() > 0
    assert torch.equal(matlab_sobel_edges(x / 255), e)  # the threshold is relative to mean(b)
    assert torch.equal(matlab_sobel_edges(x[1]), e[1])  # batch items are independent
    assert torch.equal(matlab_sobel_edges(x + 40), e)  # gradients only


# ----------------------------------------------------------------------------- bwmorph thin
def _documented_deletions(subiteration: int) -> list[bool]:
    """For every 8-neighbourhood (bit i-1 = x_i), delete p? G1, G2 and G3 (1) or G3' (2)."""
    out = []
    for code in range(256):
        x = [None] + [(code >> (i - 1)) & 1 for i in range(1, 9)] + [code & 1]  # x[9] = x1
        xh = sum(1 for i in range(1, 5) if x[2 * i - 1] == 0 and (x[2 * i] or x[2 * i + 1]))
        n1 = sum(1 for k in range(1, 5) if x[2 * k - 1] or x[2 * k])
        n2 = sum(1 for k in range(1, 5) if x[2 * k] or x[2 * k + 1])
        g3 = ((x[2] or x[3] or not x[8]) and x[1]) == 0
        g3p = ((x[6] or x[7] or not x[4]) and x[5]) == 0
        out.append(xh == 1 and 2 <= min(n1, n2) <= 3 and (g3 if subiteration == 1 else g3p))
    return out


def test_skimage_thin_tables_are_the_documented_conditions():
    """scikit-image's two lookup tables equal G1-G3 / G1-G3' for all 256 neighbourhoods, with its
    neighbourhood code x1 = east = 1, x2 = north-east = 2, ... counter-clockwise (its mask)."""
    from skimage.morphology import _skeletonize as sk

    assert [bool(v) for v in sk.G123_LUT] == _documented_deletions(1)
    assert [bool(v) for v in sk.G123P_LUT] == _documented_deletions(2)


@pytest.mark.parametrize("size, keep", [
    # 3x3 block at rows/cols 1..3. Subiteration 1 (G3: (x2|x3|~x8) & x1 == 0) deletes the top row
    # and the right column, (1,1) (1,2) (1,3) (2,3) (3,3); the 2x2 block (2..3, 1..2) is left.
    # Subiteration 2 (G3': (x6|x7|~x4) & x5 == 0) deletes (2,1), (3,1), (3,2); (2,2) has x5 = 1
    # and x6 = 1, so G3' fails and it stays. An isolated pixel has X_H = 0: done.
    (3, [(2, 2)]),
    # 2x2 block at rows/cols 1..2: subiteration 1 deletes (1,1), (1,2) and (2,2); (2,1) has
    # x1 = x2 = x3 = 1, so G3 fails. It is left alone.
    (2, [(2, 1)]),
])
def test_bwmorph_thin_blocks_by_hand(size, keep):
    bw = torch.zeros(size + 2, size + 2)
    bw[1 : size + 1, 1 : size + 1] = 1
    want = torch.zeros_like(bw, dtype=torch.float64)
    for r, c in keep:
        want[r, c] = 1
    assert torch.equal(bwmorph_thin(bw), want)


def test_bwmorph_thin_keeps_a_line_and_is_batched():
    # Middle pixels of a 1-pixel line have X_H = 2 (G1 fails); its ends have min(n1, n2) = 1.
    line = torch.zeros(2, 3, 7)
    line[:, 1, 1:6] = 1
    assert torch.equal(bwmorph_thin(line), line.to(torch.float64))
    assert bwmorph_thin(torch.zeros(0, 4, 4)).shape == (0, 4, 4)


def test_sobel_edges_bwmorph_thins_the_thresholded_map():
    x = _step(w=12, h=6, at=6)
    raw = sobel_edges(x, "none")
    assert torch.equal(sobel_edges(x, "bwmorph"), bwmorph_thin(raw))
    assert 0 < sobel_edges(x, "bwmorph").sum() < raw.sum()


def test_edge_errors_are_clear():
    with pytest.raises(ValueError, match="thinning must be one of"):
        sobel_edges(_step(), "zhang")
    with pytest.raises(ValueError, match=r"x must be a tensor of planes"):
        matlab_sobel_edges(torch.zeros(5))
    with pytest.raises(ValueError, match=r"bw must be a tensor of planes"):
        bwmorph_thin(torch.zeros(5))
