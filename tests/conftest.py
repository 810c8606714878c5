import json
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The Triton kernels are tested on CPU tensors through triton's interpreter (CI has no GPU). It must
# be on before triton is first imported, and torch imports it as soon as it is installed: so here,
# before any test module imports torch. Nothing else in the suite runs Triton (CPU tensors take
# the numba scan).
os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the seeded tiny-random preset, shared read-only across tests."""
    from longllava.core.checkpoint import build_preset

    return build_preset("tiny-random")


@pytest.fixture(scope="session")
def serve_demo(tiny):
    """Launch a demo app (``build_medical_app`` / ``build_remote_sensing_app``) with the tiny model on
    a free 127.0.0.1 port, as a context manager yielding a namespace (app, store, url, llava, and
    ``text(message)`` for a chat message's text); the app and its session store close on exit."""
    import socket
    from contextlib import contextmanager
    from types import SimpleNamespace

    from longllava.apps.serving import ModelLoader, launch
    from longllava.apps.sessions import SessionStore
    from longllava.apps.settings import DemoSettings
    from longllava.core.pipeline import LongLlava

    llava = LongLlava(*tiny)

    def text(message: dict) -> str:  # gradio gives a chat message's content as a string or typed parts
        content = message["content"]
        return content if isinstance(content, str) else " ".join(part["text"] for part in content if part.get("type") == "text")

    @contextmanager
    def serve(build, name: str, max_upload_mb: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = SessionStore(name)
        settings = DemoSettings(port=port, max_upload_mb=max_upload_mb)
        app = build(ModelLoader(lambda: llava, "tiny-random"), settings, sessions=store)
        try:
            yield SimpleNamespace(app=app, store=store, url=launch(app, settings, block=False), llava=llava, text=text)
        finally:
            app.close()
            store.close_all()

    return serve


# --- the released checkpoints' layout ------------------------------------------------------------

REFERENCE = FIXTURES / "reference"
RELEASED_MULTIMODAL_FIELDS = {  # what the released LongLLaVA checkpoints add to Jamba's config.json
    "architectures": ["LlavaJambaForCausalLM"], "model_type": "llava_jamba", "resamplePooling": "2d",
    "mm_vision_select_layer": -2, "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "pad",
    "mm_patch_merge_type": "flat", "mm_vision_select_feature": "patch", "tokenizer_model_max_length": 40960,
    "mm_vision_tower": "/cluster/path/clip-vit-large-patch14-336",
}
SHAPE_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "attn_layer_period", "attn_layer_offset", "expert_layer_period",
    "expert_layer_offset", "num_experts", "num_experts_per_tok", "mamba_d_state", "mamba_d_conv",
    "mamba_expand", "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias", "rms_norm_eps",
    "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
)


def reference_config(config) -> dict:
    """The released config.json (the real file) with `config`'s sizes and the multimodal fields."""
    released = json.loads((REFERENCE / "config.json").read_text())
    return {**released, **{k: getattr(config.text_config, k) for k in SHAPE_FIELDS}, **RELEASED_MULTIMODAL_FIELDS,
            "mm_hidden_size": config.vision_config.hidden_size}


def _write_reference_checkpoint(model, tokenizer, ref_dir, clip_dir, vision_inside=False, clip_hub_layout=False,
                               tokenizer_files=None):
    """Write `model` the way FreedomIntelligence/LongLLaVA checkpoints store it: AI21 Jamba names
    (moe.experts.{j}.*, pre_moe_layernorm, B/C_layernorm), mm_projector.0/2, CLIP in its own dir,
    the real config.json's fields. Spread over 3 safetensors shards so that one layer's experts
    straddle two shards. `tokenizer_files`: copy the released tokenizer files instead of `tokenizer`."""
    import torch
    from safetensors.torch import save_file

    config = model.config
    text = config.text_config
    ref = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision_tower."):
            if vision_inside:
                # transformers 4 layout, as in the released checkpoints
                ref["model.vision_tower.vision_tower.vision_model." + key[len("vision_tower."):]] = value
            continue
        if key.startswith("multi_modal_projector."):
            ref[key.replace("multi_modal_projector.linear_1", "model.mm_projector.0")
                   .replace("multi_modal_projector.linear_2", "model.mm_projector.2")] = value
            continue
        key = key[len("language_model."):]
        m = re.match(r"model\.layers\.(\d+)\.(.*)", key)
        if not m:
            ref[key] = value
            continue
        prefix, sub = f"model.layers.{m.group(1)}.", m.group(2)
        if sub == "feed_forward.experts.gate_up_proj":
            for j in range(text.num_experts):
                gate, up = value[j].chunk(2)
                ref[f"{prefix}moe.experts.{j}.gate_proj.weight"] = gate
                ref[f"{prefix}moe.experts.{j}.up_proj.weight"] = up
        elif sub == "feed_forward.experts.down_proj":
            for j in range(text.num_experts):
                ref[f"{prefix}moe.experts.{j}.down_proj.weight"] = value[j]
        elif sub == "feed_forward.router.weight":
            ref[prefix + "moe.router.weight"] = value
        elif sub.startswith("feed_forward."):  # dense layer: the reference keeps it as expert 0
            ref[prefix + "moe.experts.0." + sub[len("feed_forward."):]] = value
        else:
            sub = (sub.replace("pre_ff_layernorm", "pre_moe_layernorm")
                      .replace("b_layernorm", "B_layernorm").replace("c_layernorm", "C_layernorm"))
            ref[prefix + sub] = value
    keys = sorted(ref)
    ref_dir.mkdir(parents=True)
    for i in range(3):
        part = {k: ref[k].clone().contiguous() for k in keys[i::3]}
        save_file(part, str(ref_dir / f"model-0000{i + 1}-of-00003.safetensors"))
    ref_config = reference_config(config)
    (ref_dir / "config.json").write_text(json.dumps(ref_config))
    if tokenizer_files is None:
        tokenizer.save_pretrained(ref_dir)
    else:
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(tokenizer_files / name, ref_dir / name)
    if clip_hub_layout:  # openai/clip-vit-large-patch14-336: a whole CLIPModel, tower under vision_model.
        model.vision_tower.config.save_pretrained(clip_dir)
        tower = {"vision_model." + k: v.clone() for k, v in model.vision_tower.state_dict().items()}
        positions = model.vision_tower.embeddings.position_ids  # saved by transformers 4
        tower["vision_model.embeddings.position_ids"] = positions.clone()
        tower.update({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2), "logit_scale": torch.ones(())})
        save_file(tower, str(clip_dir / "model.safetensors"))
    else:
        model.vision_tower.save_pretrained(clip_dir)
    return ref


@pytest.fixture(scope="session")
def write_reference_checkpoint():
    """``write(model, tokenizer, ref_dir, clip_dir, ...)``: a checkpoint in the released layout."""
    return _write_reference_checkpoint


# --- small time series written by the tests: videos and cine DICOM ---------------------------------


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct solid colour per frame, far apart so lossy coding cannot confuse two of them."""
    return ((i * 37) % 200 + 25, 230 - (i * 53) % 200, (i * 91) % 200 + 25)


def _write_mp4(path, pts: list[int], rate: int = 4, size=(64, 48)) -> None:
    """An MPEG-4 video whose frame k is solid _colour(k), shown at pts[k] / rate seconds."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.time_base = Fraction(1, rate)
        stream.codec_context.options = {"qscale": "2"}
        for k, p in enumerate(pts):
            pixels = np.empty((size[1], size[0], 3), np.uint8)
            pixels[:] = _colour(k)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = p
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _frame_colour_index(image, count: int) -> int:
    """Which _colour(k) a decoded frame shows (nearest in RGB)."""
    import numpy as np

    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    distances = [np.abs(mean - _colour(k)).sum() for k in range(count)]
    assert min(distances) < 24, f"frame colour {mean} matches no written frame"
    return int(np.argmin(distances))


def _write_cine(path, *, frame_times_ms=None, frame_time_ms=None, photometric="RGB", frames=5, patient="Doe^Jane"):
    """A small multi-frame ultrasound file; frame k is solid _colour(k)."""
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    rgb = np.empty((frames, 8, 10, 3), np.uint8)
    for k in range(frames):
        rgb[k] = _colour(k)
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", "YBR_FULL", per_frame=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = patient, "ID-998877"
    ds.Modality, ds.SeriesInstanceUID = "US", generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, 8, 10
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frame_times_ms is not None:
        ds.FrameTimeVector = [float(v) for v in frame_times_ms]
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTimeVector")
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="session")
def clips():
    """Writers of tiny clips with known content: ``write_mp4(path, pts, rate)`` (frame k solid
    ``colour(k)``, shown at ``pts[k] / rate`` s), ``write_cine(path, ...)`` (a multi-frame ultrasound
    DICOM), and ``frame_colour_index(image, count)`` (which written frame a decoded one shows)."""
    from types import SimpleNamespace

    return SimpleNamespace(colour=_colour, write_mp4=_write_mp4, frame_colour_index=_frame_colour_index,
                           write_cine=_write_cine)


def _write_geotiff(path, data, crs, transform, tags=None, nodata=None):
    """A GeoTIFF of ``data`` (bands, rows, cols) with that CRS, transform, tags and nodata."""
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture(scope="session")
def write_geotiff():
    """``write_geotiff(path, data, crs, transform, tags=None, nodata=None)`` -> path."""
    return _write_geotiff
