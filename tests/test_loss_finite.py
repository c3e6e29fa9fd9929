"""Every paper's training loss has a finite value and finite gradients on the patches that break
naive formulas: flat (no gradient anywhere), saturated (all 0 or all 1: clipped highlights and
shadows), identical sources (nothing to choose) and a near-flat image whose gradient is tiny but
nonzero (the case that sent GACN's soft Q_G loss to NaN)."""
from __future__ import annotations

import warnings

import pytest
import torch

from experiments.run import build_module
from mfif.config import load_config

PAPERS = ["gacn", "msasn", "udpnet", "ufafuse", "vaeedof"]
SIZE = 64  # VAEEDOF pads to multiples of 64


def _texture(c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, SIZE, SIZE, generator=g)


def patches(c: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """name -> (source A, source B, all-in-focus) of shape [1, c, SIZE, SIZE]."""
    tex = _texture(c, 0)
    near_flat = torch.zeros(1, c, SIZE, SIZE)
    near_flat[..., SIZE // 2, SIZE // 3] = 1e-21  # gradient 1e-21: nonzero, squares underflow
    half = torch.zeros(1, c, SIZE, SIZE)
    half[..., SIZE // 2:] = 1.0
    return {
        "flat": (torch.full_like(tex, 0.5),) * 3,
        "black": (torch.zeros_like(tex),) * 3,
        "white": (torch.ones_like(tex),) * 3,
        "identical": (tex, tex, tex),
        "near_flat": (near_flat, half, half),
    }


@pytest.fixture(scope="module", params=PAPERS)
def module(request):
    torch.manual_seed(0)
    cfg = load_config(f"{request.param}.yaml", ["profile=smoke"])
    m = build_module(cfg)
    m.train()
    return m


@pytest.mark.parametrize("case", ["flat", "black", "white", "identical", "near_flat"])
def test_loss_and_gradients_are_finite(module, case):
    c = 1 if module.colour_policy != "rgb" else 3
    a, b, gt = patches(c)[case]
    batch = {"sources": torch.stack([a, b], 1).expand(2, -1, -1, -1, -1).contiguous(),
             "gt": gt.expand(2, -1, -1, -1).contiguous(),
             "mask": torch.cat([torch.ones(1, 1, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE)]),
             "name": ["x", "y"]}
    module.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss), f"{module.method_name} {case}: loss {loss}"
    loss.backward()
    bad = [n for n, p in module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{module.method_name} {case}: non-finite gradients in {bad[:5]}"
    assert any(p.grad is not None for p in module.parameters()), "the loss reaches no parameter"


@pytest.mark.parametrize("tiny", [1e-12, 1e-21, 1e-30, 0.0])
def test_gacn_qg_loss_gradient_is_finite_where_the_fused_gradient_nearly_vanishes(tiny):
    """The case behind the NaN at step ~190 of a GACN run: F's gradient strength is nonzero but so
    small that g_S / g_F^2 overflows; with the toolbox's exact-zero guard this gives inf/NaN."""
    from lightning_modules.gacn.loss import qg_loss
    from mfif.metrics.gradient import GACN_LOSS, q_abf

    a = torch.zeros(1, 1, 8, 8)
    a[..., 4:] = 1.0
    b = torch.zeros(1, 1, 8, 8)
    f = torch.zeros(1, 1, 8, 8)
    f[..., 3, 2] = tiny
    f.requires_grad_(True)
    qg_loss(a, b, f).backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().max() < 1e3
    if tiny == 1e-21:  # the unguarded soft loss is not finite here (what the floor fixes)
        g = f.detach().clone().requires_grad_(True)
        q_abf(a, b, g, constants=GACN_LOSS, soft_k=1000.0).sum().backward()
        assert not torch.isfinite(g.grad).all()


def test_floor_guards_equal_the_toolbox_guards_on_8bit_images():
    """On 8-bit-valued images a Sobel response is a multiple of 1/255 (>> 1e-5): the loss's floors
    change nothing, so the loss stays the soft form of the metric (GACN Eqs. 12-13)."""
    from mfif.metrics.gradient import GACN_LOSS, q_abf

    g = torch.Generator().manual_seed(3)
    a, b, f = (torch.randint(0, 256, (2, 1, 24, 24), generator=g).float() / 255 for _ in range(3))
    a[0, :, :8] = 0.5  # flat areas: exact zeros where both guards act alike
    for soft_k in (None, 1000.0):
        floor = q_abf(a, b, f, constants=GACN_LOSS, soft_k=soft_k, guards="floor")
        toolbox = q_abf(a, b, f, constants=GACN_LOSS, soft_k=soft_k)
        assert torch.equal(floor, toolbox)
