import json
from dataclasses import asdict

import pytest
import torch

from longllava.bench.memory import analytic_cache_bytes, measured_cache_bytes
from longllava.bench.model import (
    build_variant,
    extrapolate_prefill_seconds,
    prompt_ids,
    prompt_processor,
    run_model_bench,
    timed_prefill,
)
from longllava.bench.report import Row, check_targets, ratios
from longllava.bench.settings import ModelBenchConfig, variant_config
from longllava.cli import main
from longllava.core.checkpoint import preset_config
from longllava.errors import InputError


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two OpenMP threads stall badly when the 2 cores are shared; restore the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def expected_cache_bytes(text, attention_layers: int, tokens: int, dtype_bytes: int) -> int:
    """Independent of the module: K and V per attention layer and token; conv window (batch, inner,
    d_conv) + SSM state (batch, inner, d_state) per Mamba layer."""
    head_dim = text.hidden_size // text.num_attention_heads
    inner = text.mamba_expand * text.hidden_size
    kv = 2 * attention_layers * text.num_key_value_heads * head_dim * tokens * dtype_bytes
    mamba_layers = text.num_hidden_layers - attention_layers
    return kv + mamba_layers * (1 * inner * text.mamba_d_conv + 1 * inner * text.mamba_d_state) * dtype_bytes


@pytest.mark.slow
def test_cli_small_run_writes_outputs_and_cache_matches_analytic(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "model", "--images", "2,1", "--max-new-tokens", "3", "--unchunked-max-images", "1"]
    assert main([*args, "--chunk-size", "100", "--threads", "1", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (out / "bench_model.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results == printed and results["mode"] == "measured" and results["dtype"] == "float32"
    assert results["preset"] == "tiny-random"  # the default, the core's preset

    text = preset_config("tiny-random").text_config
    attention_layers = {"hybrid": 1, "attention": text.num_hidden_layers, "mamba": 0}
    rows = {(r["variant"], r["images"]): r for r in results["rows"]}
    assert set(rows) == {(v, n) for v in attention_layers for n in (1, 2)}
    for (variant, images), row in rows.items():
        assert row["error"] is None
        assert row["tokens"] > 144 * images
        assert row["cache_bytes"]["total"] == expected_cache_bytes(text, attention_layers[variant], row["tokens"], 4)
        assert row["cache_bytes"] == row["analytic_cache_bytes"]
        assert row["prefill_s"] > 0 and row["decode_tokens_per_s"] > 0 and row["vision_s"] > 0
        assert isinstance(row["peak_bytes"], int)
        # one-pass prefill only up to --unchunked-max-images
        assert (row["unchunked_prefill_s"] is not None) == (images == 1)
    # one more image adds its 144 tokens plus the frame markers, the same for every variant
    assert len({rows[(v, 2)]["tokens"] - rows[(v, 1)]["tokens"] for v in attention_layers}) == 1
    assert rows[("mamba", 1)]["cache_bytes"]["kv"] == 0 and rows[("attention", 1)]["cache_bytes"]["state"] == 0

    table = (out / "results.md").read_text().splitlines()
    for variant in attention_layers:
        for images in (1, 2):
            assert sum(line.startswith(f"| {variant} | {images} | ") for line in table) == 1
    ratios = {r["images"]: r for r in results["ratios"]}
    assert set(ratios) == {1, 2}
    hybrid, attention = rows[("hybrid", 2)], rows[("attention", 2)]
    assert ratios[2]["cache_bytes"] == pytest.approx(hybrid["cache_bytes"]["total"] / attention["cache_bytes"]["total"])
    assert results["targets"]["evaluated"] is False


def test_timed_prefill_is_the_core_prefill_and_stops_at_its_budget(tiny):
    model, _ = tiny
    processor = prompt_processor(model.config)
    ids = prompt_ids(processor, 2)
    assert int((ids == model.config.image_token_id).sum()) == 2 * 144
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    core_cache, core_logits = model.prefill(ids, pixels, chunk_size=128)
    with torch.no_grad():
        embeds = model.embed_inputs(ids, pixels)
    timing = timed_prefill(model, embeds, 128, "cpu")
    assert timing.complete and timing.total_chunks == -(-ids.shape[1] // 128) and timing.seconds > 0
    torch.testing.assert_close(timing.logits, core_logits, rtol=1e-5, atol=1e-5)
    assert measured_cache_bytes(timing.cache) == measured_cache_bytes(core_cache)

    stopped = timed_prefill(model, embeds, 32, "cpu", budget_s=1e-9)  # over budget after every chunk
    assert (stopped.measured_chunks, stopped.total_chunks) == (3, -(-ids.shape[1] // 32))
    assert not stopped.complete and stopped.cache is None and stopped.logits is None


def test_variant_layouts_change_only_the_attention_mamba_pattern():
    config = preset_config("tiny-random")
    layouts = {}
    for variant in ("hybrid", "attention", "mamba"):
        text = variant_config(config, variant).text_config
        layouts[variant] = "".join("A" if k == "attention" else "M" for k in text.layers_block_type)
        assert text.layers_num_experts == config.text_config.layers_num_experts
        assert (text.hidden_size, text.num_hidden_layers) == (64, 8)
    assert layouts == {"hybrid": "MMMMAMMM", "attention": "AAAAAAAA", "mamba": "MMMMMMMM"}
    with pytest.raises(InputError, match="unknown variant"):
        variant_config(config, "retnet")


def test_pure_mamba_chunked_prefill_equals_one_pass_and_holds_only_state():
    config = preset_config("tiny-random")
    model = build_variant(config, "mamba", "cpu", torch.float32, seed=0)
    embeds = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(2))
    one_cache, one_logits = model.prefill(inputs_embeds=embeds, chunk_size=300)
    cache, logits = model.prefill(inputs_embeds=embeds, chunk_size=64)
    torch.testing.assert_close(logits, one_logits, rtol=1e-4, atol=1e-5)
    text = model.config.text_config
    assert measured_cache_bytes(cache) == {"kv": 0, "state": expected_cache_bytes(text, 0, 300, 4), "total": expected_cache_bytes(text, 0, 300, 4)}
    assert measured_cache_bytes(cache) == analytic_cache_bytes(text, 300, 4)


def test_released_preset_on_cpu_reports_the_analytic_model_only(tmp_path):
    results = run_model_bench(ModelBenchConfig(preset="longllava-9b", images=(1, 1000), device="cpu", out=tmp_path))
    assert results["mode"] == "analytic" and results["dtype"] == "bfloat16" and not results["rows"]
    variants = results["variants"]
    # 32 layers, 8 KV heads of 128, bf16: 2 (K, V) x 8 x 128 x 2 bytes = 4096 bytes per attention layer and token
    assert variants["hybrid"]["kv_bytes_per_token"] == 4 * 4096
    assert variants["attention"]["kv_bytes_per_token"] == 32 * 4096
    assert variants["mamba"]["kv_bytes_per_token"] == 0
    # Mamba: inner 8192 x (d_conv 4 + d_state 16) x 2 bytes per layer
    assert variants["hybrid"]["state_bytes"] == 28 * 8192 * 20 * 2
    assert variants["hybrid"]["layers"] == "MMMMAMMM" * 4
    assert 8e9 < variants["hybrid"]["params"]["total"] < 11e9
    # a Mamba layer (in_proj to 2 x inner, out_proj) is larger than an attention layer at this width
    assert variants["attention"]["params"]["total"] < variants["hybrid"]["params"]["total"] < variants["mamba"]["params"]["total"]
    tokens = results["tokens"]
    assert tokens[1] > 1000 * 144
    assert variants["hybrid"]["analytic_cache_bytes"][1]["total"] == 4 * 4096 * tokens[1] + 28 * 8192 * 20 * 2
    assert (tmp_path / "results.md").read_text().count("| hybrid | MMMMAMMM") == 1
    assert (tmp_path / "bench_model.png").is_file()


def test_bad_options_are_clear_errors(capsys, tmp_path):
    assert main(["bench", "model", "--images", "1,x", "--out", str(tmp_path)]) == 2
    assert "--images must be comma-separated integers" in capsys.readouterr().err
    assert main(["bench", "model", "--images", "1", "--variants", "hybrid,rwkv", "--out", str(tmp_path)]) == 2
    assert "unknown ['rwkv']" in capsys.readouterr().err
    assert main(["bench", "model", "--images", "1", "--max-new-tokens", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["bench", "model", "--preset", "tiny-9b", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'tiny-9b'; choose one of tiny-random, longllava-9b" in capsys.readouterr().err
    assert ModelBenchConfig(preset="tiny").resolve().preset == "tiny-random"  # the name the docs use


def test_spent_time_budget_skips_measurements_but_writes_outputs(tmp_path, capsys):
    assert main(["bench", "model", "--images", "1,8", "--variants", "attention,hybrid", "--time-budget", "0", "--out", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["variant"], r["images"]) for r in results["rows"]] == [("hybrid", 1), ("hybrid", 8), ("attention", 1), ("attention", 8)]
    assert all(r["error"] == "skipped: --time-budget 0 s spent" and r["prefill_s"] is None for r in results["rows"])
    assert results["ratios"][0]["prefill_s"] is None and "vision_per_image" not in results
    assert "| attention | 8 | " in (tmp_path / "results.md").read_text()
    assert "targets not evaluated" in report


def test_extrapolated_prefill_follows_the_line_through_measured_chunks():
    # chunks 1..3 took 2, 3, 4 s: 1 + index seconds; chunk 4 -> 5 s, chunk 5 holds half a chunk -> 6 / 2
    assert extrapolate_prefill_seconds([1.0, 2.0, 3.0, 4.0], length=550, chunk_size=100) == pytest.approx(18.0)
    with pytest.raises(ValueError, match="at least 3"):
        extrapolate_prefill_seconds([1.0, 2.0], length=550, chunk_size=100)


def test_resume_refuses_results_measured_with_other_settings(tmp_path, capsys):
    base = ["bench", "model", "--images", "1", "--variants", "attention", "--time-budget", "0", "--out", str(tmp_path)]
    assert main(base) == 0
    assert main([*base, "--resume", "--chunk-size", "64"]) == 2
    assert "chunk_size: None there, 64 now" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{}")
    assert main([*base, "--resume"]) == 2
    assert "is not a results file of this benchmark" in capsys.readouterr().err


def test_targets_at_1000_images_say_what_their_ratios_rest_on():
    def row(variant, prefill_s, peak, cache=None, extrapolated=None):
        return Row(variant, 1000, 154037, 1.0, prefill_s, peak, None if extrapolated else 20.0, cache or {},
                   {"kv": 0, "state": 0, "total": {"hybrid": 125, "attention": 1000}[variant]}, extrapolated=extrapolated)

    measured = [row("hybrid", 30.0, 90, {"total": 125}), row("attention", 100.0, 100, {"total": 1000})]
    results = {"preset": "tiny-random", "device": "cpu", "rows": [asdict(r) for r in measured], "ratios": ratios(measured)}
    checks = check_targets(results)["checks"]
    assert {k: c["met"] for k, c in checks.items()} == {"prefill_s": True, "peak_bytes": True, "cache_bytes": True}
    assert checks["prefill_s"]["ratio"] == pytest.approx(0.3) and checks["cache_bytes"]["basis"] == "measured"

    # attention stopped by --prefill-budget: its peak is a lower bound, so a ratio above 1 decides nothing
    stopped = [row("hybrid", 30.0, 250), row("attention", 100.0, 100, extrapolated="budget")]
    stopped[0].cache_bytes = {"total": 125}
    results = {"preset": "tiny-random", "device": "cpu", "rows": [asdict(r) for r in stopped], "ratios": ratios(stopped)}
    checks = check_targets(results)["checks"]
    assert checks["peak_bytes"]["met"] is None and "upper bound" in checks["peak_bytes"]["basis"]
    assert checks["prefill_s"]["met"] is True and "extrapolated" in checks["prefill_s"]["basis"]
    assert checks["cache_bytes"]["ratio"] == pytest.approx(0.125) and "analytic" in checks["cache_bytes"]["basis"]
    assert check_targets({**results, "device": "cuda"})["evaluated"] is False
