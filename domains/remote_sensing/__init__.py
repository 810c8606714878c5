"""Remote sensing: large scenes to geo-referenced tile grids (``scene``, ``tiling``) and the RS
dataset readers (``datasets``: FIT-RS, FIT-RSFG-Bench, STAR). Model-free, like the medical loaders."""
