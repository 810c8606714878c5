"""The model and everything model-side: configuration, modeling, processor, tokenizer, the image
protocol (the only code that writes markers), checkpoint I/O, question answering and the grid plan."""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "pipeline": ["LongLlava", "Answer"],
    "checkpoint": ["load_model", "save_model"],
    "convert": ["convert_reference_checkpoint"],
    "downcycle": ["downcycle_checkpoint"],
    "generation": ["GenerationSettings", "generate"],
    "configuration": ["LongLlavaConfig", "PRESETS"],
    "modeling": ["LongLlavaForConditionalGeneration"],
    "processor": ["LongLlavaProcessor", "partition_highres", "open_image"],
    "protocol": ["ImageInput", "StackInput", "HighResInput", "user_message", "chat_prompt"],
    "grid": ["GridPlan", "plan_grid"],
    "info": ["model_info"],
})
