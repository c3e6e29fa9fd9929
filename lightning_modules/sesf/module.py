"""SESF-Fuse LightningModule (Ma, Zhu, Yin et al., "SESF-Fuse: an unsupervised deep model for
multi-focus image fusion", Neural Computing and Applications 2021) - an **inference-only
baseline** here: it runs the authors' released weights (``sesf_official.pkl``, converter in
:mod:`.official`); training the autoencoder (Sec. 3.2, Eqs. 1-4) is not implemented and
``training_step`` says so.

Inference for a pair A, B (Sec. 3.3, released ``SESF_Fuse.fuse``):

1. gray sources (colour policy ``gray_map``: the map is computed on gray and applied to every
   RGB channel, Sec. 4.1 "we transformed the images to grayscale and calculated a decision map");
2. initial map of Eq. 8 from the SF of the encoder features (:mod:`.network`);
3. consistency verification: opening, small-region removal, closing, small-hole removal
   (:func:`.postprocess.consistency_verification`);
4. guided filter r = 4, eps = 0.1 guided by the initial fused image - in colour for RGB
   sources, as released (:func:`.postprocess.channel_sum_guided_filter`);
5. ``F = W A + (1 - W) B`` (Eq. 9), clipped to [0, 1].

N >= 3 sources: Sec. 3.1 "fuse them, one by one, in series" - the running fusion is fused with
the next source; the step weights compose into per-source maps
(:func:`mfif.ops.decision.compose_sequential_maps`). The running image stays in float (the
release only fuses pairs; chaining its ``fuse`` would round to 8 bits between steps).

Where we differ from the release (and why):

* gray conversion: ``model.gray = released`` (default) uses the release's scikit-image
  ``rgb2gray`` weights (0.2125, 0.7154, 0.0721), so that the published SESF rows can be
  regenerated; ``matlab`` uses the project's ``gray_map`` convention (MATLAB rgb2gray, as GACN
  here). The choice matters more than for GACN: the map is hard, and the guided filter with 8-bit
  guidance and eps = 0.1 is very sensitive; on the 20 Lytro pairs ``matlab`` changes 0.07 % of the
  verified map pixels and 3 % of the weights by more than 1e-3 (fused PSNR 68 dB against the
  release), ``released`` reproduces the release (identical verified maps).
* float32 features (as released) but the SF difference and the guided filter in float64; the
  release's guided filter runs in float64 numpy, its SF comparison in float32.
* the fused image is returned in float; the release truncates to uint8 (``astype``), our
  writers round.
* the network always runs with BatchNorm running statistics (``train()`` keeps it in eval
  mode): there is no training phase that could use batch statistics.
* tiled inference (``fuse.py --tile``) applies the 0.01 H W region threshold per tile; fuse
  whole images to get the released behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput, check_sources
from lightning_modules.sesf.network import INPUT_MEAN, INPUT_STD, SESFNet
from lightning_modules.sesf.postprocess import channel_sum_guided_filter, consistency_verification
from mfif.config import ConfigError, ModelConfig
from mfif.ops.colour import from_working_space, to_working_space
from mfif.ops.decision import compose_sequential_maps
from mfif.registry import register_method


class InferenceOnlyError(ConfigError, NotImplementedError):
    """Training was requested from an inference-only baseline (``run.py`` exits with code 2)."""


# scikit-image rgb2gray (ITU-R BT.709 luma), the released ``SESF_Fuse.fuse`` gray conversion.
RELEASED_GRAY = (0.2125, 0.7154, 0.0721)
GRAY_CONVERSIONS = ("released", "matlab")

INFERENCE_ONLY = ("SESF-Fuse is an inference-only baseline here: run it with the released weights "
                  "(fuse.py --method sesf --weights sesf_official.pkl, or run.py --config sesf.yaml "
                  "mode=test|predict weights=sesf_official.pkl); its autoencoder training (Sec. 3.2) "
                  "is not implemented")


@dataclass
class SESFConfig(ModelConfig):
    """SESF-Fuse inference constants with the paper's (or the released code's) values."""

    growth: int = 16  # Fig. 1 / released: 4 dense layers x 16 channels = 64 features
    cse_reduction: int = 8  # released: CSELayer(16, 8)
    input_mean: float = INPUT_MEAN  # released transforms.Normalize mean of the gray COCO images
    input_std: float = INPUT_STD  # released Normalize std
    sf_radius: int = 5  # Sec. 3.3.1 r (Eqs. 5-6) / released kernel_radius = 5
    postprocess: bool = True  # Sec. 3.3.2 consistency verification (false: initial map only)
    morph_radius: int = 5  # Sec. 3.3.2: disk radius = SF kernel radius; released ks = 5
    area_ratio: float = 0.01  # Sec. 3.3.2: regions smaller than 0.01 H W are reversed
    refine: bool = True  # Sec. 3.3.2 guided filter (false: binary weights)
    gf_radius: int = 4  # Sec. 3.3.2: window radius r = 4
    gf_eps: float = 0.1  # Sec. 3.3.2: eps = 0.1, on 8-bit intensities (released guidance is 0-255)
    intensity_scale: float = 255.0  # released: guidance in 0-255 units, so eps applies there
    colour_guidance: bool = True  # released: RGB initial fusion as guidance for colour sources
    gray: str = "released"  # released: skimage rgb2gray weights | matlab: the project's gray_map weights


def build_network(m: DictConfig | SESFConfig) -> SESFNet:
    """The SESF network of a model config."""
    return SESFNet(m.growth, m.cse_reduction, m.sf_radius, m.input_mean, m.input_std)


@register_method("sesf", SESFConfig)
class SESF(FusionModule):
    """SESF-Fuse: SF of deep autoencoder features, consistency verification, guided filter (inference only)."""

    colour_policy = "gray_map"  # Sec. 4.1: decision map from the gray images, applied to RGB
    pad_multiple = 1  # fully convolutional, no pooling (Sec. 3.2)

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        if m.gray not in GRAY_CONVERSIONS:
            raise ValueError(f"model.gray must be one of {GRAY_CONVERSIONS}, got '{m.gray}'")
        if not 0.0 <= float(m.area_ratio) <= 1.0:
            raise ValueError(f"model.area_ratio must lie in [0, 1], got {m.area_ratio}")
        if m.gf_radius < 1 or m.gf_eps <= 0 or m.intensity_scale <= 0:
            raise ValueError(f"model.gf_radius must be >= 1 and model.gf_eps, model.intensity_scale > 0, "
                             f"got {m.gf_radius}, {m.gf_eps}, {m.intensity_scale}")
        self.net = build_network(m).eval()

    def train(self, mode: bool = True) -> "SESF":
        """Module mode as usual, but the network keeps BatchNorm running statistics (inference only)."""
        super().train(mode)
        self.net.eval()
        return self

    # ------------------------------------------------------------------ inference
    def pair_weights(self, a: Tensor, b: Tensor, guide_a: Tensor, guide_b: Tensor) -> tuple[Tensor, dict]:
        """Fusion weight of ``a`` against ``b`` (Sec. 3.3): ``W`` ``[B, 1, H, W]`` and the stages.

        ``a``, ``b``: gray ``[B, 1, H, W]``; ``guide_a``, ``guide_b``: the same sources in the
        guidance colour space (gray or RGB) for the guided filter.
        """
        m = self.cfg.model
        initial = self.net.decision(a, b)  # Eq. 8
        verified = consistency_verification(initial, m.morph_radius, m.area_ratio) if m.postprocess else initial
        weight = verified
        if m.refine:
            guidance = (verified * guide_a + (1 - verified) * guide_b) * m.intensity_scale  # initial fused image
            weight = channel_sum_guided_filter(guidance, verified, m.gf_radius, m.gf_eps)
        return weight, {"initial": initial, "verified": verified}

    def sequential_maps(self, gray: Tensor, guide: Tensor) -> FusionOutput:
        """Per-source maps ``[B, N, 1, H, W]`` for gray sources, fusing one by one in series (Sec. 3.1).

        Returns ``FusionOutput(None, maps, extras)``; ``extras`` holds the ``initial`` and
        ``verified`` binary maps of each step, ``[B, N-1, 1, H, W]``.
        """
        run_g, run_c = gray[:, 0], guide[:, 0]
        steps, initial, verified = [], [], []
        with torch.no_grad():  # hard decisions: no gradient through the maps
            for j in range(1, gray.shape[1]):
                w, stages = self.pair_weights(run_g, gray[:, j], run_c, guide[:, j])
                steps.append(w)
                initial.append(stages["initial"])
                verified.append(stages["verified"])
                if j + 1 < gray.shape[1]:  # Eq. 9 for the running fusion
                    run_g, run_c = torch.lerp(gray[:, j], run_g, w), torch.lerp(guide[:, j], run_c, w)
        extras = {"initial": torch.stack(initial, 1), "verified": torch.stack(verified, 1)}
        return FusionOutput(None, compose_sequential_maps(steps), extras)

    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Gray sources ``[B, N, 1, H, W]``: maps with gray guidance and the gray fusion (Eq. 9)."""
        out = self.sequential_maps(sources, sources)
        return FusionOutput((out.maps * sources).sum(1), out.maps, out.extras)

    def fuse(self, sources: Tensor) -> FusionOutput:
        """Fuse N >= 2 aligned sources, gray or RGB (maps from gray, guided filter on the colours).

        Overrides the base ``fuse`` to give the guided filter the sources' own colours (the
        release guides with the RGB initial fusion) and for ``model.gray``; no padding is needed.

        Shape:
            - sources: :math:`(B, N, C, H, W)` in [0, 1], C in {1, 3}
            - output.fused: :math:`(B, C, H, W)`; output.maps: :math:`(B, N, 1, H, W)`
        """
        check_sources(sources)
        if self.cfg.model.gray == "released" and sources.shape[2] == 3:
            gray = (sources * sources.new_tensor(RELEASED_GRAY).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
        else:
            gray = to_working_space(sources, self.colour_policy)
        guide = sources if self.cfg.model.colour_guidance else gray
        out = self.sequential_maps(gray, guide)
        fused = from_working_space(None, out.maps, sources, self.colour_policy)
        return FusionOutput(fused.clamp(0, 1), out.maps, out.extras)

    def load_official_weights(self, path: str) -> None:
        """Load ``sesf_official.pkl`` (strict keys and shapes after renaming, see :mod:`.official`)."""
        from lightning_modules.sesf.official import load_official

        load_official(self.net, path)

    # ------------------------------------------------------------------ no training
    def training_step(self, batch: dict, batch_idx: int) -> Optional[Tensor]:
        raise InferenceOnlyError(INFERENCE_ONLY)

    def configure_optimizers(self):
        """Refuses at the start of ``fit`` (before any data is loaded): inference only."""
        raise InferenceOnlyError(INFERENCE_ONLY)
