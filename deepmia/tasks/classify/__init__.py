"""Self-configuring image classification (2D and 3D; binary, multi-class, multi-label).

Optionally fused with clinical features. Fingerprint -> plan -> train (ensemble, model selection on validation
AUROC) -> temperature scaling and operating threshold on validation -> predict (TTA, MC dropout, uncertainty
flag) -> evaluate -> explain. See ``docs/classification.md``.
"""
