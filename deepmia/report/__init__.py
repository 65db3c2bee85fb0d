"""Reports a person reads: model cards, figures (overlays, montages, orientation letters, scale bars), demo page.

The insight layer: it imports core, data, processing, metrics and learning, never ``deepmia.tasks`` or the CLI.
Callers in the task packages hand it plain data (plan and metrics dictionaries, images, boxes) and it returns
the path of what it wrote. Submodules load their heavy dependencies lazily:

- :mod:`deepmia.report.model_card`: :func:`~deepmia.report.model_card.write_model_card` for every task.
- :mod:`deepmia.report.figures`: segmentation, detection and classification figures.
- :mod:`deepmia.report.registration`: checkerboard, overlay and deformation-grid figures of a registration.
- :mod:`deepmia.report.demo`: the HTML page of ``deepmia demo``.
"""
