"""Medical imaging loaders and dataset readers (model-free).

- :mod:`.ct` / :mod:`.dicom`: ``load_ct`` (NIfTI, DICOM folder / files / zip) -> ``CTVolume`` in HU,
  canonical orientation (axial, inferior->superior, radiological display);
- :mod:`.windowing`: window presets and HU -> RGB at the processor's size;
- :mod:`.slices`: slice selection and lazy ``ct_to_slices``;
- :mod:`.large_image`: ``load_large_image`` for pathology PNG / JPEG / (tiled) TIFF;
- :mod:`.clips` / :mod:`.video` / :mod:`.cine`: ``load_clip`` (videos through PyAV, cine DICOM: US, echo, XA, cine
  MR) -> ``Clip``, frames sampled by presentation time;
- :mod:`.datasets`: PubMedVision, VQA-RAD / PathVQA (LLaVA-Med and multiple-choice formats), CT-RATE;
- :mod:`.cli`: ``longllava ct-slices`` (``longllava bench ct`` is :mod:`longllava.bench.ct`).
"""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "ct": ["load_ct", "read_nifti"], "volume": ["CTVolume"],
    "slices": ["CTSlice", "ct_to_slices", "select_slice_indices"],
    "windowing": ["Window", "parse_windows", "render_slice"], "large_image": ["load_large_image"],
    "visuals": ["ct_stack", "slice_trace", "pathology_input", "clip_stack"],
    "video": ["Clip", "load_video"], "clips": ["load_clip"], "cine": ["load_cine_dicom"], "dicom": ["dicom_content"],
    "datasets": ["read_pubmedvision", "read_llava_med_vqa", "read_multiple_choice_vqa", "read_ct_rate", "load_ct_rate_volume", "ct_rate_questions"]})
