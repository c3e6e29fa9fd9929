"""UDPNet: ops (Eqs. 1-4, 7, 10-11), networks, losses, every ablation variant, colour, K >= 3."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lightning_modules.udpnet import VARIANTS, UDPNetConfig, UDPNetModule
from lightning_modules.udpnet.loss import blind_spot_mask_loss, stage_mask_loss
from lightning_modules.udpnet.network import (EncoderDecoder, NonLocalBlock, UnrolledFuser,
                                              count_parameters)
from lightning_modules.udpnet.ops import (blind_spot, energy_h, grad_h_image, grad_h_masks,
                                          initial_masks, neighbour_share, normalise_masks)
from lightning_modules.udpnet.refiners import morphological_refine, region_vote
from mfif.config import DataConfig, ExperimentConfig


def make_module(**model) -> UDPNetModule:
    cfg = OmegaConf.structured(ExperimentConfig(method="udpnet", model=UDPNetConfig(**model), data=DataConfig()))
    return UDPNetModule(cfg)


def two_focus_pair(b: int = 2, c: int = 1, h: int = 32, w: int = 32, k: int = 2, seed: int = 0) -> torch.Tensor:
    """K sources of one random texture, source j sharp in vertical band j, box-blurred elsewhere."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, c, h, w, generator=g)
    blur = torch.nn.functional.avg_pool2d(img, 5, stride=1, padding=2, count_include_pad=False)
    band = torch.arange(w).view(1, 1, 1, w) * k // w
    return torch.stack([torch.where(band == j, img, blur) for j in range(k)], dim=1)


# ---------------------------------------------------------------------------------- ops
def test_initial_masks_known_value():
    # S1: vertical step (cols 0-3 = 0, 4-7 = 1) -> normalised Sobel 0.5 at cols 3-4.
    # S2: horizontal step (row 0 = 0, rows 1-7 = 1) -> 0.5 at rows 0-1. Flat elsewhere.
    s1 = torch.zeros(8, 8)
    s1[:, 4:] = 1
    s2 = torch.ones(8, 8)
    s2[0] = 0
    m = initial_masks(torch.stack([s1, s2]).view(1, 2, 1, 8, 8))[0, :, 0]
    expected = torch.full((8, 8), 0.5)  # both flat: tie split evenly
    expected[2:, 3:5] = 1.0  # only S1 has a gradient: S1 is the sharper source (Eq. 3)
    expected[:2, :] = 0.0  # only S2 has a gradient
    expected[:2, 3:5] = 0.5  # equal gradients: tie
    torch.testing.assert_close(m[0], expected)
    torch.testing.assert_close(m.sum(0), torch.ones(8, 8))


def test_initial_masks_checks_shape():
    with pytest.raises(ValueError, match=r"\[B, K, 1, H, W\]"):
        initial_masks(torch.rand(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="K >= 2"):
        initial_masks(torch.rand(1, 1, 1, 8, 8))


def test_neighbour_share_known_value():
    m = torch.zeros(1, 1, 3, 3)
    m[..., 1, 1] = 1
    share = neighbour_share(m)[0, 0]
    expected = torch.tensor([[1 / 3, 1 / 5, 1 / 3], [1 / 5, 0.0, 1 / 5], [1 / 3, 1 / 5, 1 / 3]])
    torch.testing.assert_close(share, expected)


def test_blind_spot_statistics():
    g = torch.Generator().manual_seed(0)
    m0 = (torch.rand(1, 1, 1, 384, 384, generator=g) > 0.5).float()
    masks = torch.cat([m0, 1 - m0], dim=1)
    out, keep = blind_spot(masks, 0.9, generator=g)
    replaced = keep == 0
    assert abs(replaced.float().mean().item() - 0.1) < 0.005  # Eq. 4: p = 0.9 kept
    assert torch.equal(out[~replaced], masks[~replaced])  # kept pixels untouched
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # N_k is binary
    share = neighbour_share(masks)
    for level in range(9):  # replaced values ~ Bernoulli(share of ones among the 8 neighbours)
        sel = replaced & ((share - level / 8).abs() < 1e-6)
        if sel.sum() > 400:
            assert abs(out[sel].mean().item() - level / 8) < 0.06, level
    with pytest.raises(ValueError, match="keep_prob"):
        blind_spot(masks, 1.5)


def test_gradients_of_h_match_autograd():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 1, 6, 5, generator=g).requires_grad_()
    m = torch.rand(2, 3, 1, 6, 5, generator=g).requires_grad_()  # K = 3 (Eq. 12)
    s = torch.rand(2, 3, 1, 6, 5, generator=g)
    ga, gm = torch.autograd.grad(energy_h(a, m, s, lam=1.7).sum(), [a, m])
    torch.testing.assert_close(grad_h_image(a, m, s, lam=1.7), ga)  # Eq. 11
    torch.testing.assert_close(grad_h_masks(a, m, s, lam=1.7), gm)  # Eq. 10


def test_normalise_masks_sums_to_one():
    m = torch.rand(2, 3, 1, 4, 4)
    m[:, :, :, 0, 0] = 0  # all-zero pixel -> uniform
    n = normalise_masks(m)
    torch.testing.assert_close(n.sum(1), torch.ones(2, 1, 4, 4))
    torch.testing.assert_close(n[:, :, 0, 0, 0], torch.full((2, 3), 1 / 3))


# ---------------------------------------------------------------------------------- networks
def test_encoder_decoder_odd_sizes_and_nonlocal_identity_at_init():
    net = EncoderDecoder(2, 1, 4, non_local=True)
    assert net(torch.rand(1, 2, 15, 9)).shape == (1, 1, 15, 9)
    nl = NonLocalBlock(8)
    x = torch.rand(2, 8, 7, 5)
    torch.testing.assert_close(nl(x), x)  # W_z zero-initialised (Wang et al. [70])


def test_parameter_count_close_to_paper():
    fuser = make_module().fuser
    n = count_parameters(fuser)
    assert n == 389_193
    assert abs(n - 392_000) / 392_000 < 0.01  # Table I: 0.392 M
    assert abs(count_parameters(make_module(variant="wo_unrolling").fuser) - n) / n < 0.05  # "similar size"


def test_step_sizes_are_learnable_and_get_gradients():
    mod = make_module()
    names = dict(mod.named_parameters())
    assert isinstance(mod.fuser.rho_m, torch.nn.Parameter) and "fuser.rho_m" in names
    assert isinstance(mod.fuser.rho_a, torch.nn.Parameter) and "fuser.rho_a" in names
    assert mod.fuser.rho_m.shape == (3,) and mod.fuser.rho_a.shape == (3,)  # T = 3
    torch.manual_seed(0)
    mod.compute_losses({"sources": two_focus_pair()})["loss"].backward()
    assert (mod.fuser.rho_m.grad.abs() > 0).all() and (mod.fuser.rho_a.grad.abs() > 0).all()
    before = mod.fuser.rho_m.detach().clone()
    torch.optim.Adam(mod.parameters(), lr=1e-2).step()
    assert not torch.equal(before, mod.fuser.rho_m.detach())


# ---------------------------------------------------------------------------------- losses
def test_losses_known_values():
    init = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1)
    pred = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1, 1)
    keep = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1)
    # Eq. 5: only source 1 perturbed: 0.5^2; complementarity 0.4 * (0.75 - 1)^2
    torch.testing.assert_close(blind_spot_mask_loss(pred, init, keep, 0.4), torch.tensor(0.25 + 0.4 * 0.0625))
    # Eq. 13: omega_t = 2^t, t = 1, 2
    target = torch.zeros(1, 2, 1, 1, 1)
    ones = torch.ones(1, 2, 1, 1, 1)
    torch.testing.assert_close(stage_mask_loss([ones, 0.5 * ones], target), torch.tensor(2 * 2 + 4 * 0.5))


# ---------------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_one_step_and_fuses(variant):
    torch.manual_seed(0)
    mod = make_module(variant=variant)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-3)
    parts = mod.compute_losses({"sources": two_focus_pair()})
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    params = list(mod.parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert sum(p.grad.abs().sum() for p in params) > 0
    opt.step()
    with torch.no_grad():
        out = mod.fuse(two_focus_pair(b=1, c=3, h=27, w=35))
    assert out.fused.shape == (1, 3, 27, 35) and out.maps.shape == (1, 2, 1, 27, 35)
    torch.testing.assert_close(out.maps.sum(1), torch.ones(1, 1, 27, 35))  # Eq. 2


def test_variants_build_the_right_parts():
    assert make_module(variant="wo_f").predictor is None
    assert make_module(variant="wo_g").fuser is None
    assert not isinstance(make_module(variant="wo_unrolling").fuser, UnrolledFuser)
    mod = make_module(variant="wo_g_star")  # G trained, F's masks at inference (Sec. IV-C (f))
    src = two_focus_pair(b=1)
    with torch.no_grad():
        out = mod.fuse(src)
        expected = normalise_masks(mod.predictor(initial_masks(src)))
    torch.testing.assert_close(out.maps, expected)
    with pytest.raises(ValueError, match="model.variant"):
        make_module(variant="nope")
    with pytest.raises(ValueError, match="model.refiner"):
        make_module(variant="wo_g", refiner="opening")


def test_lfusion_weight_is_zero_without_lfusion():
    torch.manual_seed(0)
    parts = make_module(variant="wo_lfusion").compute_losses({"sources": two_focus_pair()})
    torch.testing.assert_close(parts["loss"], parts["mask_f"] + 0.2 * parts["mask_g"])


def test_training_step_ignores_ground_truth():
    """Unsupervised (Sec. III-A): gt / mask in the batch change neither the loss nor a gradient."""
    mod = make_module()
    src = two_focus_pair()

    def step(batch):
        mod.zero_grad()
        torch.manual_seed(123)  # same blind-spot draws
        loss = mod.compute_losses(batch)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in mod.parameters()]

    l0, g0 = step({"sources": src, "gt": torch.zeros(2, 1, 32, 32), "mask": torch.zeros(2, 1, 32, 32)})
    l1, g1 = step({"sources": src, "gt": torch.rand(2, 1, 32, 32), "mask": torch.ones(2, 1, 32, 32)})
    l2, g2 = step({"sources": src})
    assert torch.equal(l0, l1) and torch.equal(l0, l2)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(g0, g1, g2))


# ---------------------------------------------------------------------------------- K, colour
def test_three_sources():
    torch.manual_seed(0)
    mod = make_module()
    src = two_focus_pair(b=1, c=3, h=24, w=30, k=3)
    loss = mod.compute_losses({"sources": src})["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        out = mod.fuse(src)
    assert out.fused.shape == (1, 3, 24, 30) and out.maps.shape == (1, 3, 1, 24, 30)
    torch.testing.assert_close(out.maps.sum(1), torch.ones(1, 1, 24, 30))


def test_y_channel_keeps_source_colour():
    mod = make_module()
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 20, 22, generator=g) * 0.8 + 0.1
    with torch.no_grad():
        out = mod.fuse(torch.stack([img, img], dim=1))
    torch.testing.assert_close(out.fused, img, atol=1e-4, rtol=0)
    gray = img.mean(1, keepdim=True)
    with torch.no_grad():
        out_gray = mod.fuse(torch.stack([gray, gray], dim=1))
    assert out_gray.fused.shape == (1, 1, 20, 22)
    torch.testing.assert_close(out_gray.fused, gray, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------- Fig. 7 refiners
def test_morphological_refiners_known_values():
    m = torch.zeros(1, 2, 1, 9, 9)
    m[0, 0, 0, 4, 4] = 1  # an isolated speck: opening removes it
    m[0, 1] = 1
    m[0, 1, 0, 4, 4] = 0  # a one-pixel hole: closing fills it
    assert morphological_refine(m, "opening", 3)[0, 0].sum() == 0
    assert morphological_refine(m, "closing", 3)[0, 1].min() == 1
    with pytest.raises(ValueError, match="opening"):
        morphological_refine(m, "erode", 3)


def test_region_vote_known_value():
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[..., 2:] = 7  # two regions: left and right halves
    m0 = torch.zeros(1, 1, 1, 4, 4)
    m0[..., :2] = 0.8  # source 0 mostly sharp on the left
    m0[..., 0, 0] = 0.0
    masks = torch.cat([m0, 1 - m0], dim=1)
    out = region_vote(masks, labels)
    expected0 = torch.zeros(4, 4)
    expected0[:, :2] = 1
    torch.testing.assert_close(out[0, 0, 0], expected0)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 1, 4, 4))


def make_halves_segmenter():
    """A stand-in for a user's SAM factory: labels the left and right halves."""
    def segment(image):
        lab = torch.zeros(image.shape[0], 1, *image.shape[-2:], dtype=torch.long)
        lab[..., image.shape[-1] // 2:] = 1
        return lab
    return segment


@pytest.mark.parametrize("refiner,target", [("opening", None), ("closing", None),
                                             ("restormer", "torch.nn:Identity"),
                                             ("sam", f"{__name__}:make_halves_segmenter")])
def test_refiner_plugins_train_and_fuse(refiner, target):
    torch.manual_seed(0)
    mod = make_module(refiner=refiner, refiner_target=target, morph_window=3)
    assert mod.predictor is None
    loss = mod.compute_losses({"sources": two_focus_pair()})["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        out = mod.fuse(two_focus_pair(b=1))
    torch.testing.assert_close(out.maps.sum(1), torch.ones(1, 1, 32, 32))


def test_plugin_refiner_needs_a_target():
    with pytest.raises(ValueError, match="refiner_target"):
        make_module(refiner="sam")
    with pytest.raises(ValueError, match="cannot be imported"):
        make_module(refiner="restormer", refiner_target="no_such_module_xyz:f")
