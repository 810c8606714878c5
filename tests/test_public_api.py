"""Each package's ``__all__`` names what users import, and every name resolves; importing the
package itself stays light (the names load on first use)."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["longllava", "longllava.core", "longllava.domains.medical", "longllava.domains.remote_sensing",
            "longllava.eval", "longllava.finetune", "longllava.apps"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for exported in package.__all__:
        value = getattr(package, exported)
        assert getattr(value, "__name__", exported) == exported or not callable(value), exported
    with pytest.raises(AttributeError):
        getattr(package, "not_a_public_name")


def test_top_level_names_are_the_layers_own():
    import longllava
    from longllava.core.pipeline import LongLlava
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.remote_sensing.tiling import tile_scene
    from longllava.registry import load_llava

    assert (longllava.LongLlava, longllava.load_ct, longllava.tile_scene, longllava.load_llava) == (
        LongLlava, load_ct, tile_scene, load_llava)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, longllava, longllava.core, longllava.eval; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
