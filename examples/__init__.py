"""Example data the package reads at run time (package data, ~4.4 MB): the demos' example files and
the default needle haystack of ``longllava eval vniah`` and of the synthetic task set.

The bottom layer: it imports nothing from the package, so any layer may name these paths. The
files' provenance and licences are in ``examples/README.md``; ``tests/fixtures`` links to them.
"""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
EXAMPLE_CT = EXAMPLES_DIR / "example_ct.nii.gz"  # real CT, NIfTI, 112 axial slices at 3 mm
EXAMPLE_PATHOLOGY = EXAMPLES_DIR / "ihc_colon.png"  # real IHC histology, 512 x 512 RGB
EXAMPLE_SCENE = EXAMPLES_DIR / "RGB.byte.tif"  # real Landsat 7 clip, GeoTIFF, 791 x 718, EPSG:32618
