"""Insight into classifiers: saliency maps, uncertainty and probability calibration.

* :mod:`deepmia.explain.saliency`: Grad-CAM and Grad-CAM++ (MONAI) with the target layer found automatically,
  occlusion sensitivity, and overlays (PNG for 2D, NIfTI plus slice PNGs for 3D).
* :mod:`deepmia.explain.uncertainty`: MC dropout, test-time-augmentation and ensemble sampling of predictions,
  and the uncertainty score each prediction carries.
* :mod:`deepmia.explain.calibration`: temperature scaling fitted on validation logits.
"""
