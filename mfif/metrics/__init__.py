"""Fusion metric suite: every metric is a batched ``torchmetrics.Metric`` registered by name.

No-reference metrics (``update(fused, sources)``), grouped by family:

* information theory (:mod:`~mfif.metrics.information`, :mod:`~mfif.metrics.fmi`):
  ``q_nmi``, ``mi``, ``q_ncie``, ``q_te``, ``fmi_edge``, ``fmi_dct``;
* image features (:mod:`~mfif.metrics.gradient`, :mod:`~mfif.metrics.multiscale`,
  :mod:`~mfif.metrics.phase`): ``q_g``, ``q_m``, ``q_sf``, ``q_p`` (Zhao);
* structural similarity (:mod:`~mfif.metrics.structural`): ``q_piella`` (+ ``_w``, ``_e``),
  ``q_c``, ``q_y``;
* human perception (:mod:`~mfif.metrics.perceptual`): ``q_cb``, ``q_cv`` (lower is better),
  ``viff``;
* statistics of F (:mod:`~mfif.metrics.statistics`, :mod:`~mfif.metrics.gradient`):
  ``sen``, ``std``, ``avg``, ``sf``, ``ei``;
* the variants each paper printed (:mod:`~mfif.metrics.conventions`, e.g. ``q_g_zl``,
  ``q_y_exact``; :data:`~mfif.metrics.conventions.PAPER_CONVENTIONS` maps paper columns to them).

Full-reference metrics (``update(fused, gt)``, :mod:`~mfif.metrics.full_reference`):
``psnr``, ``ssim``, ``ms_ssim``, ``mse``, ``iw_ssim``, ``haarpsi``, ``mdsi``, ``ms_gmsd``,
``lpips``, ``dists``, ``pieapp``.

Losses import the differentiable pieces from here: :func:`q_abf` (GACN) and :func:`ssim`.
"""
from mfif.metrics.registry import (  # noqa: F401
    MetricSpec,
    build_metric,
    build_metric_collections,
    metric_names,
    metric_spec,
    register_metric,
)
from mfif.metrics import full_reference  # noqa: F401  (registers psnr, ssim, ...)
from mfif.metrics import fmi, gradient, information, multiscale, perceptual, phase, statistics, structural  # noqa: F401
from mfif.metrics.gradient import GACN_LOSS, PETROVIC, QabfConstants, q_abf  # noqa: F401
from mfif.metrics.structural import ssim  # noqa: F401
from mfif.metrics.weights import MetricWeightsError, check_metric_weights, missing_metric_weights  # noqa: F401

from mfif.metrics import conventions  # noqa: F401,E402  (registers the per-paper variants)

#: The no-reference set scored by default (every registered canonical "nr" metric; the
#: per-paper convention variants of :mod:`mfif.metrics.conventions` are scored on request).
NO_REFERENCE_METRICS = tuple(n for n in metric_names() if metric_spec(n).kind == "nr" and metric_spec(n).variant_of is None)
#: Full-reference metrics that run without network weights.
FULL_REFERENCE_METRICS = ("psnr", "ssim", "ms_ssim", "mse", "iw_ssim", "haarpsi", "mdsi", "ms_gmsd")
