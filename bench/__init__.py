"""``longllava bench ...``: speed and memory benchmarks that print figures (the top layer: they may
import core, the domains and eval; nothing below imports them).

- :mod:`.cli`: registers every ``longllava bench`` target;
- ``bench model``: :mod:`.settings` (options, the three layer layouts), :mod:`.memory` (analytic
  cache + state model, peak-memory sampler), :mod:`.model` (measurement through the core's chunked
  prefill, the resumable run), :mod:`.report` (ratios, targets, tables, plot);
- ``bench scan``: :mod:`.scan` (the Mamba selective scan, CPU kernel vs pure torch);
- ``bench ct``: :mod:`.ct` (CT loading + slicing against the decode floor);
- ``bench scene``: :mod:`.scene` (scene tiling against the raw-read floor).
"""
