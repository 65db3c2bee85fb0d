"""Insight into classifiers: saliency maps and their overlays, and the ``deepmia explain`` driver.

* :mod:`deepmia.explain.saliency`: Grad-CAM and Grad-CAM++ (MONAI) with the target layer found automatically,
  occlusion sensitivity.
* :mod:`deepmia.explain.overlay`: overlays (PNG for 2D, NIfTI plus slice PNGs for 3D).
* :mod:`deepmia.explain.classify`: explain a classification model directory's predictions on files.

Uncertainty sampling and temperature scaling live in the learning layer (:mod:`deepmia.engine.uncertainty`,
:mod:`deepmia.engine.calibration`) because every predictor applies them.
"""
