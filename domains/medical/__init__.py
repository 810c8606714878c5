"""Medical imaging loaders and dataset readers (model-free).

- :mod:`.ct` / :mod:`.dicom`: ``load_ct`` (NIfTI, DICOM folder / files / zip) -> ``CTVolume`` in HU,
  canonical orientation (axial, inferior->superior, radiological display);
- :mod:`.windowing`: window presets and HU -> RGB at the processor's size;
- :mod:`.slices`: slice selection and lazy ``ct_to_slices``;
- :mod:`.large_image`: ``load_large_image`` for pathology PNG / JPEG / (tiled) TIFF;
- :mod:`.datasets`: PubMedVision, VQA-RAD / PathVQA (LLaVA-Med and multiple-choice formats), CT-RATE;
- :mod:`.cli`: ``longllava ct-slices`` (``longllava bench ct`` is :mod:`longllava.bench.ct`).
"""
