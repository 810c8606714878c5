"""A regular (non-editable) install works: the wheel carries the default model and the example data,
and ``longllava ask`` / ``eval vniah`` / ``demo medical`` run from outside the source tree.

The wheel goes into a fresh venv whose site-packages reuses this interpreter's installed
dependencies through a ``.pth`` line (no network, nothing installed twice); the dev environment's
editable finder is not loaded (``.pth`` files are read in site directories only), which the test
checks by where ``longllava`` is imported from.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_LEFTOVERS = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "artifacts")


def run(*command, cwd, env, timeout=600) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, environment, cwd outside the source tree) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # built from a copy, so that the build leaves nothing (build/, *.egg-info) in the source tree
    source = tmp / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source,
        cwd=tmp, env=env)
    wheel = next((tmp / "dist").glob("longllava-*.whl"))
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp, env=env)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp, env=env).strip())
    reused = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "reuse_dependencies.pth").write_text("".join(f"{path}\n" for path in reused))
    # --ignore-installed: the dev environment's longllava (visible through the .pth) is neither
    # taken as already installed nor touched
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
        wheel, cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv, env, elsewhere


@pytest.mark.slow
def test_wheel_imports_from_the_new_venv_with_its_data(installed):
    venv, env, cwd = installed
    probe = ("import json, longllava, longllava.examples as e, longllava.models as m; print(json.dumps("
             "{'file': longllava.__file__, 'ct': str(e.EXAMPLE_CT), 'model': str(m.SYNTHETIC_DEFAULT),"
             " 'files': sorted(p.name for p in m.SYNTHETIC_DEFAULT.iterdir())}))")
    found = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=cwd, env=env))
    assert Path(found["file"]).is_relative_to(venv), found["file"]  # not the source tree, not the dev install
    assert Path(found["ct"]).is_relative_to(venv) and Path(found["model"]).is_relative_to(venv)
    assert {"config.json", "model.safetensors", "report.json", "tokenizer.json"} <= set(found["files"])
    wheel = next(Path(found["file"]).parent.parent.glob("longllava-*.dist-info"))
    assert "License-Expression: Apache-2.0" in (wheel / "METADATA").read_text()


@pytest.mark.slow
def test_wheel_ask_and_vniah_on_the_shipped_model(installed, tmp_path):
    venv, env, cwd = installed
    longllava = venv / "bin" / "longllava"
    ct = run(venv / "bin" / "python", "-c", "import longllava.examples as e; print(e.EXAMPLE_CT)", cwd=cwd, env=env).strip()
    answer = json.loads(run(longllava, "ask", "--model", "default", "--ct", ct, "--max-slices", "4", "--question",
                            "Is there a lesion in this CT? Answer yes or no.", "--max-new-tokens", "4", "--json",
                            cwd=cwd, env=env))
    assert answer["model"] == "default" and answer["num_images"] == 4
    assert answer["answer"].strip().lower() in ("yes", "no")  # the trained format, not random tokens

    out = tmp_path / "vniah"
    printed = run(longllava, "eval", "vniah", "--model", "default", "--lengths", "1,3", "--depths", "0,1",
                  "--out", out, cwd=cwd, env=env)
    assert "V-NIAH over 112 ct image(s)" in printed
    result = json.loads((out / "vniah.json").read_text())
    assert Path(result["haystack"]["source"]).is_relative_to(venv)  # the default haystack: the package's CT
    assert (out / "vniah_heatmap.png").is_file()


@pytest.mark.slow
def test_wheel_demo_serves_its_page(installed, tmp_path):
    from gradio_client import Client

    venv, env, cwd = installed
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "demo.log"
    with log.open("w") as sink:
        demo = subprocess.Popen([str(venv / "bin" / "longllava"), "demo", "medical", "--port", str(port)], cwd=cwd,
                                env=env, stdout=sink, stderr=subprocess.STDOUT)
    url, page = f"http://127.0.0.1:{port}/", ""
    try:
        deadline = time.monotonic() + 120
        while not page and time.monotonic() < deadline and demo.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page.startswith("<!doctype html>"), log.read_text()[-3000:]
        client = Client(url, verbose=False)
        status, _ = client.predict(api_name="/model_status")
        while status != "model: default" and time.monotonic() < deadline:
            time.sleep(0.5)
            status, _ = client.predict(api_name="/model_status")
        assert status == "model: default"
    finally:
        demo.terminate()
        demo.wait(timeout=30)
