"""CLI for the demos: ``longllava demo medical|remote-sensing``."""

from __future__ import annotations

import argparse

from longllava.core.cli import add_model_args
from longllava.registry import DEFAULT_MODEL, load_from_args

APPS = {
    "medical": "CT volumes (NIfTI, DICOM), large pathology images and clips (videos, cine DICOM)",
    "remote-sensing": "large geo-referenced scenes (GeoTIFF / COG) as tile grids, and several dates of one area",
}


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="Gradio web demos: medical or remote-sensing")
    apps = demo.add_subparsers(dest="app", metavar="APP", required=True)
    for name, description in APPS.items():
        app = apps.add_parser(name, help=description, description=f"Web demo: {description}.")
        add_model_args(app)
        app.set_defaults(model=DEFAULT_MODEL)
        app.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        app.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
        app.add_argument("--max-upload-mb", type=float, default=2048, help="upload size limit in MB (default 2048)")
        app.add_argument("--concurrency", type=int, default=1,
                         help="model runs at once; further requests wait in a queue (default 1)")
        app.add_argument("--share", action="store_true", help="also open a public gradio.live link (off unless asked)")
        app.set_defaults(func=_demo)


def settings_from_args(args: argparse.Namespace):
    from longllava.apps.settings import DemoSettings

    return DemoSettings(host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                        concurrency=args.concurrency, share=args.share)


def build_app(name: str, model, settings):
    """The named demo's Blocks over a model (an :class:`~longllava.apps.serving.ModelLoader`)."""
    if name == "medical":
        from longllava.apps.medical import build_medical_app

        return build_medical_app(model, settings)
    from longllava.apps.remote_sensing import build_remote_sensing_app

    return build_remote_sensing_app(model, settings)


def _demo(args: argparse.Namespace) -> int:
    from longllava.apps.serving import ModelLoader, launch

    settings = settings_from_args(args)
    # the page is served at once; the model loads meanwhile (the page says so until it is ready)
    model = ModelLoader(lambda: load_from_args(args), str(args.model))
    launch(build_app(args.app, model, settings), settings, block=True)
    return 0
