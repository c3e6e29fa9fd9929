"""mfif.ops.checks.check_shape: the one shape validator of the ops and paper modules."""
import pytest
import torch

from mfif.ops.checks import check_shape


@pytest.mark.parametrize("shape, spec, kw", [
    ((2, 3, 8, 8), "B C H W", {}), ((1, 8, 8), "* 1 H W", {}), ((2, 2, 1, 8, 8), "* 1 H W", {}),
    ((3, 8, 8), "* C:1|3 H W", {}), ((1, 8, 8), "* C:1|3 H W", {}), ((2, 2, 1, 4, 4), "B K 1 H W", {"K": 2}),
])
def test_accepts(shape, spec, kw):
    check_shape(torch.zeros(shape), "x", spec, **kw)


@pytest.mark.parametrize("shape, spec, kw, message", [
    ((2, 3, 8), "B C H W", {}, r"x must have shape \[B, C, H, W\], got \(2, 3, 8\)"),
    ((2, 8, 8), "* 1 H W", {}, r"\[\*, 1, H, W\]"),
    ((4, 8, 8), "* C:1|3 H W", {}, r"with C in \(1, 3\)"),
    ((2, 1, 1, 4, 4), "B K 1 H W", {"K": 2}, "needs K >= 2 .* K = 1"),
    ((2, 2, 3, 4, 4), "B K 1 H W", {"K": 2}, r"\[B, K, 1, H, W\]"),
])
def test_rejects_with_clear_message(shape, spec, kw, message):
    with pytest.raises(ValueError, match=message):
        check_shape(torch.zeros(shape), "x", spec, **kw)


def test_rejects_non_tensor():
    with pytest.raises(TypeError, match="sources must be a torch.Tensor, got list"):
        check_shape([1, 2], "sources", "B C H W")
