"""Gradio demos: thin wiring of the domain loaders, the protocol and the model.

``medical``: CT volumes (slice viewer, windowing, slice selection, multi-turn chat) and large
pathology images (sub-image grid); ``remote_sensing``: large geo-referenced scenes (tile grid
with coordinates, answers mapped back to tiles, GeoJSON). The helpers beside them hold the few
non-UI pieces: per-session folders (``sessions``), upload limits (``uploads``), grid drawing
(``overlay``), reading tiles and slices back from answers (``answers``), multi-turn state
(``chat``) and launching (``serving``). Started by ``longllava demo medical|remote-sensing``.
"""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "medical": ["build_medical_app"], "remote_sensing": ["build_remote_sensing_app"],
    "serving": ["launch"], "settings": ["DemoSettings"]})
