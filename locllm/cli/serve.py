"""``locllm serve``: the web demo, which doubles as a local REST service (gradio's API, ``/localize``).

    locllm serve                                   # the shipped demo checkpoint on http://127.0.0.1:7860
    locllm serve --checkpoint C --host 0.0.0.0 --port 8000 --threads 1

Needs gradio: ``pip install 'locllm[demo]'``. See :mod:`locllm.serve.app` for the page and the API.
"""

from __future__ import annotations

import os
import sys

from .common import load_localizer
from .decoding_args import add_decoding_arguments


def add_parser(parser) -> None:
    parser.add_argument("--checkpoint", help="a LocLLM checkpoint folder (default: the shipped demo checkpoint)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--detector", help="a person detector (folder or Hub id): the page offers 'detect persons'")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice; 1 on a small or busy machine)")
    add_decoding_arguments(parser)  # server-wide, for the page's fast decoding and the API


def run(args) -> int:
    # A local service: nothing about its use leaves the machine (set before gradio is imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        print("locllm serve: needs gradio; install it with pip install 'locllm[demo]'", file=sys.stderr)
        return 2
    import torch

    from ..serve import build_app, offline_theme

    if args.threads:
        torch.set_num_threads(args.threads)
    localizer = load_localizer(args)
    app = build_app(localizer)
    # max_file_size: the page refuses bigger uploads with a message, before they reach the model
    app.launch(server_name=args.host, server_port=args.port, theme=offline_theme(), ssr_mode=False,
               max_file_size="25mb")
    return 0
