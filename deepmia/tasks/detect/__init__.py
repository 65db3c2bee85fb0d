"""Self-configuring object detection (2D images; 3D volumes through the same code) with MONAI's RetinaNet.

Training boxes -> plan (scale, input size, pyramid levels and anchor shapes by k-means of the box shapes) ->
train (box-aware augmentation, bf16, model selection on validation mAP@0.5) -> predict (sliding window, mirror
TTA fused by weighted box fusion, COCO results) -> evaluate (COCO mAP, AR, FROC, CPM, bootstrap intervals).
"""
