"""Fine-tuning: dataset records -> protocol -> tokenised samples with answer-only labels -> trainer;
the synthetic task set and the embedded default model."""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "train": ["TrainOptions", "train"], "recipes": ["Recipe", "get_recipe"],
    "default_model": ["build_default_model", "ensure_default_model"],
    "synthetic": ["SyntheticSpec", "generate_task_set"]})
