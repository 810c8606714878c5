"""Remote sensing: large scenes to geo-referenced tile grids (``scene``, ``tiling``), dated scenes
of one area on one grid (``timeseries``) and the RS dataset readers (``datasets``: FIT-RS, FIT-RSFG-Bench, STAR). Model-free, like the medical loaders."""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "scene": ["Scene", "open_scene"], "tiling": ["Tile", "TileGrid", "tile_scene", "tile_to_geo"],
    "visuals": ["scene_input", "tile_trace", "date_trace", "time_series_visuals"],
    "timeseries": ["TimeSeries", "open_time_series"],
    "datasets": ["read_fit_rs_instructions", "read_fit_rsfg_bench", "read_star"]})
