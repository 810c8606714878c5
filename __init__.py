"""LongLLaVA domain toolkit.

The repository root is the ``longllava`` package, in layers (docs/architecture.md): ``errors`` and
``traces`` -> ``core`` (model, protocol, processor, checkpoint I/O) -> ``domains.medical`` and
``domains.remote_sensing`` -> ``eval`` -> ``finetune`` -> ``apps``, ``bench`` and the CLI with the
model ``registry``. The names users need are importable from here::

    from longllava import LongLlava, load_llava, load_ct, ct_to_slices, ct_stack, tile_scene, score_files
"""

__version__ = "0.1.0"

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "core.pipeline": ["LongLlava"], "core.protocol": ["ImageInput", "StackInput", "HighResInput"],
    "registry": ["load_llava", "load_model", "model_info"], "traces": ["ImageTrace"],
    "errors": ["InputError"], "domains.medical.ct": ["load_ct"],
    "domains.medical.slices": ["ct_to_slices"], "domains.medical.large_image": ["load_large_image"],
    "domains.medical.visuals": ["ct_stack", "pathology_input"],
    "domains.remote_sensing.scene": ["open_scene"], "domains.remote_sensing.tiling": ["tile_scene"],
    "domains.remote_sensing.visuals": ["scene_input"], "eval.scorers": ["score_files"],
    "eval.llava_med": ["score_llava_med_vqa"], "eval.multiple_choice": ["score_multiple_choice"],
    "eval.ct_rate": ["score_ct_rate"], "eval.fit_rsfg": ["score_fit_rsfg"],
    "eval.runner": ["run_benchmark"], "eval.vniah": ["run_vniah"]})
