"""SESF-Fuse network (Ma, Zhu, Yin et al., "SESF-Fuse: an unsupervised deep model for multi-focus
image fusion", Neural Computing and Applications 2021, Sec. 3, Fig. 1).

An autoencoder trained to reconstruct gray images (Sec. 3.2); at inference only the encoder is
used, and the decision map compares the spatial frequency of the two sources' deep features::

    x = (gray - mean) / std                  released input normalisation (``Normalize``)
    F = encoder(x)                           4 dense Conv-ReLU-BN layers + channel SE, 64 ch
    SF_k = sum_c box_r(dr^2 + dc^2)          pixel-wise SF of the features, r = 5  (Eqs. 5-7)
    D = 1 where SF_1 > SF_2, else 0          initial decision map                  (Eq. 8)

The encoder is the dense path GACN later reused (same layer order and widths: Conv3x3 ->
ReLU -> BatchNorm, cSE with reduction 8 and no biases), so it is
:class:`~lightning_modules.gacn.network.DenseFeaturePath`. The decoder (64 -> 64 -> 32 -> 16
-> 1, Conv-ReLU-BN each, Sec. 3.2) only serves training; it is kept so that the released
checkpoint loads strictly and :meth:`SESFNet.reconstruct` can check it.

Where we follow the released code (Keep-Passion/SESF-Fuse, ``nets/sesf_net.py``) rather than the
paper's text:

* SF is the raw window sum of squared *backward* differences (zero neighbour outside the image),
  summed over the 64 channels - no square root / ``1/(2r+1)^2`` of Eq. 7; both are monotonic, so
  the comparison of Eq. 8 is unchanged.
* Eq. 8 prints ``SF_1 >= SF_2``; the released comparison is strict (``>``): ties (e.g. flat,
  saturated areas where both energies are 0) go to source 2.
* the window sum is linear, so ``SF_1 - SF_2`` is computed as one box sum of the channel-summed
  energy difference (in float64): the same decision, without cancelling two large sums.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.gacn.network import ConvReLUBN, DenseFeaturePath
from mfif.ops.activity import box_sum, neighbour_energy_difference

# Released ``SESF_Fuse.__init__``: mean and std of the gray training images (MS-COCO 2014,
# Sec. 4.1), applied to every input in [0, 1] before the encoder.
INPUT_MEAN = 0.4500517361627943
INPUT_STD = 0.26465333914691797


class SESFNet(nn.Module):
    """SESF-Fuse autoencoder with the SF decision of Sec. 3.3.1.

    Args:
        growth: channels per dense layer (16; 4 layers -> 64 features, Fig. 1).
        cse_reduction: channel-SE reduction (released ``CSELayer(16, 8)``).
        sf_radius: SF kernel radius r (released ``kernel_radius = 5``).
        input_mean, input_std: released input normalisation.

    Shape:
        - a, b: :math:`(B, 1, H, W)` gray in [0, 1]
        - :meth:`decision` output: :math:`(B, 1, H, W)` in {0, 1}
    """

    def __init__(self, growth: int = 16, cse_reduction: int = 8, sf_radius: int = 5,
                 input_mean: float = INPUT_MEAN, input_std: float = INPUT_STD):
        super().__init__()
        if input_std <= 0:
            raise ValueError(f"input_std must be > 0, got {input_std}")
        if not isinstance(sf_radius, int) or sf_radius < 0:
            raise ValueError(f"sf_radius must be a non-negative int, got {sf_radius!r}")
        self.encoder = DenseFeaturePath(growth, 4, cse_reduction)
        widths = (4 * growth, 4 * growth, 2 * growth, growth, 1)  # released conv_decode_1..4
        self.decoder = nn.ModuleList(ConvReLUBN(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.sf_radius, self.input_mean, self.input_std = sf_radius, float(input_mean), float(input_std)
        self.to(memory_format=torch.channels_last)  # oneDNN NHWC convolutions (see GACNNet)
        self.requires_grad_(False)  # inference-only here: frozen weights (and the in-place fast paths)

    @staticmethod
    def _check(x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 1:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SESFNet: {name} must be a gray [B, 1, H, W] tensor, got {got}")

    def normalise(self, x: Tensor) -> Tensor:
        """Released input normalisation ``(x - mean) / std``."""
        return (x - self.input_mean) / self.input_std

    def features(self, x: Tensor) -> list[Tensor]:
        """The four dense layers ``[c0, c1, c2, c3]`` (each ``[B, 16, H, W]``) of a gray image."""
        self._check(x, "x")
        return self.encoder.layers(self.normalise(x))

    def sf_difference(self, a: Tensor, b: Tensor) -> Tensor:
        """``SF_A - SF_B`` summed over the 64 feature channels (float64), ``[B, 1, H, W]``.

        Both sources go through the encoder as one batch (BatchNorm uses running statistics).
        """
        self._check(a, "a")
        self._check(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"SESFNet: sources must share one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        n = a.shape[0]
        layers = self.features(torch.cat([a, b], 0))
        energy = neighbour_energy_difference([t[:n] for t in layers], [t[n:] for t in layers])
        return box_sum(energy.sum(1, keepdim=True, dtype=torch.float64), self.sf_radius)

    def decision(self, a: Tensor, b: Tensor) -> Tensor:
        """Initial decision map of Eq. 8 (strict ``>`` as released): 1 where ``a`` is sharper."""
        return (self.sf_difference(a, b) > 0).to(a.dtype)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The autoencoder's output for a gray image (training phase, Sec. 3.2), normalised space.

        Shape:
            - x: :math:`(B, 1, H, W)` in [0, 1]; output: :math:`(B, 1, H, W)`
        """
        y = torch.cat(self.features(x), 1)
        for block in self.decoder:
            y = block(y)
        return y

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.decision(a, b)
