"""UDPNet LightningModule: dual-path unsupervised training (Eq. 16) and mask-based inference (Eq. 1).

Training (no ground truth anywhere, Sec. III-A)::

    M~    = initial_masks(S)                        Eq. 3
    L_F   = L_mask^F(F(M_B(M~)), M~, B)             Eqs. 4-5 (blind spot)
    M^F   = F(M~)                                   Sec. III-C
    M^(t), A_G = G(S)                               Eq. 9, t = 1..T
    L_G   = sum_t 2^t ||M^(t) - sg(M^F)||^2         Eq. 13 (F detached)
    L_fus = ||sum_k M^F_k S_k - A_G||_1             Eqs. 14-15
    L     = L_F + beta L_G + gamma L_fus            Eq. 16

Inference: ``A = sum_k M_k S_k`` (Eq. 1) with G's last masks normalised to sum to 1 (Eq. 2), on
the Y channel of YCbCr; Cb/Cr by the shared chroma rule (``colour_policy = "y_channel"``, Sec. IV).

Ablations (Sec. IV-C, Tables IV/V) are ``model.variant``; Fig. 7's refiners are ``model.refiner``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput
from lightning_modules.udpnet.loss import (blind_spot_mask_loss, fusion_consistency_loss,
                                           self_reconstruction_loss, stage_mask_loss)
from lightning_modules.udpnet.network import MaskPredictor, OneShotFuser, UnrolledFuser
from lightning_modules.udpnet.ops import blind_spot, compose, initial_masks, normalise_masks
from lightning_modules.udpnet.refiners import REFINERS, build_refiner
from mfif.config import ModelConfig
from mfif.ops.colour import to_working_space
from mfif.registry import register_method

# Sec. IV-C, Tables IV/V: (a) w/o F, (b) w/o unrolling, (c) w/o BS, (d) w/o L_mask^G, (e) w/o G,
# (f) w/o G*, (g) w/o L_fusion; "full" is UDPNet.
VARIANTS = ("full", "wo_f", "wo_unrolling", "wo_bs", "wo_lmask_g", "wo_g", "wo_g_star", "wo_lfusion")


@dataclass
class UDPNetConfig(ModelConfig):
    """UDPNet hyper-parameters (paper defaults cite their section/equation)."""

    variant: str = "full"  # one of VARIANTS (Sec. IV-C ablations)
    stages: int = 3  # T = 3 unrolled stages, Sec. IV
    alpha: float = 0.4  # complementarity weight of L_mask^F, Eq. 5 / Sec. IV
    beta: float = 0.2  # weight of L_mask^G, Eq. 16 / Sec. IV
    gamma: float = 0.2  # weight of L_fusion, Eq. 16 / Sec. IV
    lam: float = 1.0  # lambda of Eqs. 6-7, Sec. IV
    keep_prob: float = 0.9  # p of the Bernoulli keep-mask B_k, Eq. 4
    stage_weight_base: float = 2.0  # omega_t = 2^t, Eq. 13
    # Widths are not given in the paper; chosen so G has 389,193 parameters (paper: 0.392 M, Table I).
    width_mask: int = 9  # mask estimators P_psi of G
    width_image: int = 10  # image estimators P_phi of G (non-local bottleneck)
    width_predictor: int = 16  # mask predictor F (training only, not in the 0.392 M)
    width_oneshot: int = 23  # "w/o unrolling" CNN: 385,067 parameters, similar to G (Sec. IV-C (b))
    rho_m_init: float = 0.1  # initial rho_M^(t), Eq. 9 (not given in the paper)
    rho_a_init: float = 0.25  # initial rho_A^(t), Eq. 9 (not given in the paper)
    mask_skip_gain: float = 4.0  # ours: mask estimators start as a soft projection onto [0, 1]
    # Fig. 7: replace the blind-spot refiner by opening / closing (window s) or a SAM / Restormer plug-in.
    refiner: str = "blind_spot"
    morph_window: int = 5  # s of Fig. 7 (opening / closing)
    refiner_target: Optional[str] = None  # "package.module:factory" of the user's SAM / Restormer
    refiner_kwargs: Dict[str, Any] = field(default_factory=dict)


def _check_model_config(m: DictConfig) -> None:
    if m.variant not in VARIANTS:
        raise ValueError(f"model.variant must be one of {VARIANTS}, got '{m.variant}'")
    if m.refiner not in REFINERS:
        raise ValueError(f"model.refiner must be one of {REFINERS}, got '{m.refiner}'")
    if m.refiner != "blind_spot" and m.variant in ("wo_f", "wo_bs", "wo_g"):
        raise ValueError(f"model.variant={m.variant} changes the blind-spot predictor F, which "
                         f"model.refiner={m.refiner} replaces; use model.refiner=blind_spot")
    if not 0.0 < m.keep_prob <= 1.0:
        raise ValueError(f"model.keep_prob must be in (0, 1], got {m.keep_prob}")


@register_method("udpnet", UDPNetConfig)
class UDPNetModule(FusionModule):
    """UDPNet (Quan et al.): blind-spot mask predictor F + deep-unrolling image fuser G."""

    colour_policy = "y_channel"  # Sec. IV: fusion on the Y channel of YCbCr
    pad_multiple = 1  # the encoder-decoders resize to their skips' sizes: any H x W works

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        _check_model_config(m)
        self.variant = m.variant
        # Non-learned refiners (Fig. 7) are plain callables: user models stay out of the checkpoint.
        self.refiner = build_refiner(m.refiner, m.morph_window, m.refiner_target, m.refiner_kwargs)
        learned_f = m.refiner == "blind_spot" and m.variant != "wo_f"
        self.predictor = MaskPredictor(m.width_predictor) if learned_f else None
        if m.variant == "wo_g":
            self.fuser = None
        elif m.variant == "wo_unrolling":
            self.fuser = OneShotFuser(m.width_oneshot)
        else:
            self.fuser = UnrolledFuser(m.stages, m.width_mask, m.width_image, m.lam, m.rho_m_init,
                                       m.rho_a_init, m.mask_skip_gain)

    # ------------------------------------------------------------------ mask path
    def predictor_masks(self, init: Tensor, sources: Tensor) -> Tensor:
        """``M^F``: F's refined masks, or a Fig. 7 refiner's, or ``M~`` itself ("w/o F").

        Shape:
            - init, sources: :math:`(B, K, 1, H, W)` -> output: :math:`(B, K, 1, H, W)`
        """
        if self.predictor is not None:
            return self.predictor(init)
        if self.refiner is not None:
            with torch.no_grad():
                return self.refiner(init, sources).to(init.dtype)
        return init  # (a) w/o F: "fixing its output to be the initial masks"

    # ------------------------------------------------------------------ inference
    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Eq. 1 with G's last masks (or F's for "w/o G" / "w/o G*"), normalised over K (Eq. 2).

        Shape:
            - sources: :math:`(B, K, 1, H, W)` (Y channel)
            - output.fused: :math:`(B, 1, H, W)`; output.maps: :math:`(B, K, 1, H, W)`
        """
        init = initial_masks(sources)
        extras = {"initial_masks": init}
        if self.fuser is None or self.variant == "wo_g_star":
            masks = self.predictor_masks(init, sources)
        else:
            out = self.fuser(sources, init)
            masks = out.stage_masks[-1]
            extras["fuser_image"] = out.image  # A_G: G's own image (not used for the result, Sec. III-D)
        maps = normalise_masks(masks)
        return FusionOutput(compose(maps, sources), maps, extras)

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: dict) -> Dict[str, Tensor]:
        """All loss terms of Eq. 16 from ``batch["sources"]`` only (``gt``/``mask`` are never read)."""
        m = self.cfg.model
        y = to_working_space(batch["sources"], self.colour_policy)
        init = initial_masks(y)
        zero = y.new_zeros(())
        parts: Dict[str, Tensor] = {}
        m_f: Optional[Tensor] = None
        if self.predictor is None:
            parts["mask_f"] = zero
            m_f = self.predictor_masks(init, y)
        elif self.variant == "wo_bs":  # (c): plain self-reconstruction, no blind spot
            m_f = self.predictor(init)
            parts["mask_f"] = self_reconstruction_loss(m_f, init)
        else:  # Eqs. 4-5
            perturbed, keep = blind_spot(init, m.keep_prob)
            parts["mask_f"] = blind_spot_mask_loss(self.predictor(perturbed), init, keep, m.alpha)
            if self.fuser is not None:
                m_f = self.predictor(init)
        if self.fuser is None:  # (e) w/o G: F alone, blind-spot loss only
            parts["loss"] = parts["mask_f"]
            return parts
        out = self.fuser(y, init)
        target = init if self.variant == "wo_lmask_g" else m_f.detach()  # (d); Eq. 13 detaches F
        first = m.stages if self.variant == "wo_unrolling" else 1
        parts["mask_g"] = stage_mask_loss(out.stage_masks, target, m.stage_weight_base, first)
        parts["fusion"] = fusion_consistency_loss(compose(m_f, y), out.image)  # Eqs. 14-15
        gamma = 0.0 if self.variant == "wo_lfusion" else m.gamma  # (g)
        parts["loss"] = parts["mask_f"] + m.beta * parts["mask_g"] + gamma * parts["fusion"]  # Eq. 16
        return parts

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        parts = self.compute_losses(batch)
        bs = batch["sources"].shape[0]
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=bs)
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items() if k != "loss"}, batch_size=bs)
        if isinstance(self.fuser, UnrolledFuser):
            steps = {f"train/rho_m_{t}": r for t, r in enumerate(self.fuser.rho_m.detach())}
            steps.update({f"train/rho_a_{t}": r for t, r in enumerate(self.fuser.rho_a.detach())})
            self.log_dict(steps, batch_size=bs)
        return parts["loss"]

    def validation_loss(self, batch: dict) -> Optional[Tensor]:
        return self.compute_losses(batch)["loss"]
