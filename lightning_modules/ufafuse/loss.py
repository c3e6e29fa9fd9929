"""UFA-Fuse training loss (Sec. III-A, Eqs. 1-4): ``lambda * L1 + (1 - lambda) * (1 - SSIM)``.

SSIM comes from kornia (:func:`kornia.metrics.ssim`): 11x11 Gaussian window, sigma 1.5, as
the official training code (ReckonerInheritor/UFA-Fusion ``Code/train.py``, ``Code/Loss.py``), averaged over pixels, channels and the
batch. Deviation: kornia pads the image by reflection ("same"), the official pytorch-ssim by
zeros; this only changes the border pixels' SSIM.

Note: ``kornia.losses.ssim_loss`` returns ``(1 - SSIM) / 2``, which would silently halve the
SSIM term relative to Eq. 4; we therefore build Eq. 4 from the SSIM map ourselves.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from kornia.metrics import ssim
from torch import Tensor

SSIM_WINDOW = 11  # official Code/Loss.py; Gaussian sigma 1.5 is kornia's fixed value
DEFAULT_LAMBDA = 0.2  # Eq. 1, Sec. III-A ("set to 0.2"); Table III sweeps it


def ssim_loss(pred: Tensor, target: Tensor, window_size: int = SSIM_WINDOW) -> Tensor:
    """Eq. 4: ``L_SSIM = 1 - SSIM(O, I)``, SSIM averaged over the map (images in [0, 1]).

    Shape:
        - pred, target: :math:`(B, C, H, W)`, H and W > ``window_size // 2``
        - output: scalar
    """
    return 1.0 - ssim(pred, target, window_size, max_val=1.0).mean()


def ufa_loss(pred: Tensor, target: Tensor, lam: float = DEFAULT_LAMBDA,
             window_size: int = SSIM_WINDOW) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 1: ``L = lambda * L1 + (1 - lambda) * L_SSIM`` between fused output and ground truth.

    Args:
        pred: fused image ``O`` in [0, 1].
        target: ground-truth all-in-focus image ``I`` in [0, 1].
        lam: trade-off lambda in [0, 1] (0.2 in the paper; Table III: 0, 0.2, ..., 1).
        window_size: SSIM Gaussian window size.

    Returns:
        ``(total, {"l1": ..., "ssim": ...})`` - the parts are the unweighted L1 (Eq. 2, mean
        absolute error) and L_SSIM (Eq. 4).

    Shape:
        - pred, target: :math:`(B, C, H, W)`
        - total: scalar
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"loss lambda must be in [0, 1], got {lam}")
    l1 = F.l1_loss(pred, target)  # Eq. 2 (mean over pixels, as torch.nn.L1Loss in the official code)
    l_ssim = ssim_loss(pred, target, window_size)  # Eqs. 3-4
    return lam * l1 + (1.0 - lam) * l_ssim, {"l1": l1, "ssim": l_ssim}


class UFALoss(nn.Module):
    """Module form of :func:`ufa_loss`. Shape as there."""

    def __init__(self, lam: float = DEFAULT_LAMBDA, window_size: int = SSIM_WINDOW):
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"loss lambda must be in [0, 1], got {lam}")
        self.lam = lam
        self.window_size = window_size

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return ufa_loss(pred, target, self.lam, self.window_size)
