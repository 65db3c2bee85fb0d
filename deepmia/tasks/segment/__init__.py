"""Self-configuring segmentation: fingerprint -> plan -> preprocess -> train -> predict -> evaluate."""
