"""The DICOM node: receive studies (C-STORE SCP), route complete series to models, send SEG/SR back to the PACS.

``deepmia pacs listen --config pacs.yaml`` runs :class:`~deepmia.pacs.node.PacsNode`; ``deepmia pacs send`` and
``deepmia pacs pull`` use :mod:`deepmia.pacs.network`; ``deepmia pacs status`` reads
:mod:`deepmia.pacs.status`. The configuration file is described in ``deepmia/pacs/example.yaml`` and
docs/clinical-outputs.md ("PACS"). Submodules load their heavy dependencies (pynetdicom, dicomweb-client, the
models) only when used.
"""
