"""Image-quality assessment: full-reference (PSNR, SSIM) and no-reference measures with pass/warn/fail flags.

Example:
    >>> from deepmia.quality import assess             # doctest: +SKIP
    >>> report = assess(read_image("t1.nii.gz"))        # doctest: +SKIP
    >>> report["snr"].value, report["snr"].status       # doctest: +SKIP
"""

from __future__ import annotations

from deepmia.quality.measures import (
    THRESHOLDS,
    Measure,
    QualityReport,
    Threshold,
    assess,
    bias_field,
    clipping,
    cnr,
    foreground_mask,
    ghosting,
    psnr,
    sharpness,
    snr,
    ssim,
)

__all__ = [
    "THRESHOLDS",
    "Measure",
    "QualityReport",
    "Threshold",
    "assess",
    "bias_field",
    "clipping",
    "cnr",
    "foreground_mask",
    "ghosting",
    "psnr",
    "sharpness",
    "snr",
    "ssim",
]
