"""Self-configuring image classification (2D and 3D; binary, multi-class, multi-label), optionally fused with
clinical features: fingerprint -> plan -> train (ensemble, model selection on validation AUROC) -> temperature
scaling and operating threshold on validation -> predict (TTA, MC dropout, uncertainty flag) -> evaluate ->
explain. See ``docs/classification.md``."""
