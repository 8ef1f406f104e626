"""``locllm calibrate``: fit a checkpoint's confidence calibration on held-out scenes and save it beside the
weights as ``calibration.json`` (what ``--score calibrated``, the default where it exists, reads).

    locllm synth --out data/s13 --num-images 500 --seed 13     # scenes the checkpoint was not trained on
    locllm calibrate checkpoints/locllm-demo --data data/s13

An existing calibration.json is refused before any work unless ``--overwrite``.
"""

from __future__ import annotations

from .common import add_json_argument, positive_int, write_json
from .decoding_args import CALIBRATION_FILE, DECODES, DEFAULT_DECODE


def add_parser(parser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a LocLLM checkpoint folder (written into)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="held-out scenes in COCO format: DIR/annotations/train.json and DIR/images (a "
                             "`locllm synth --out DIR` folder of seeds the checkpoint never saw)")
    parser.add_argument("--decode", choices=DECODES, default=DEFAULT_DECODE,
                        help=f"how coordinates are read while fitting (as --decode of predict / eval); default "
                             f"{DEFAULT_DECODE}")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="persons per forward pass (default 8)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint's calibration.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_argument(parser)


def run(args) -> int:
    from pathlib import Path

    from ..data.outputs import check_not_replacing

    check_not_replacing([Path(args.checkpoint) / CALIBRATION_FILE], args.overwrite)  # before torch is loaded
    from ..apis.calibration import calibrate

    calibration, path = calibrate(args.checkpoint, args.data, decode=args.decode, batch_size=args.batch_size,
                                  device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    about = calibration.about
    print(f"wrote {path}: {len(calibration.raw)} knots, fitted on {about['persons']} persons of {about['scenes']} "
          f"scenes ({about['folder']}), decode {about['decode']}, tied to weights {calibration.checkpoint_sha256[:12]}")
    write_json(args.json, {"calibration": str(path), "knots": len(calibration.raw), "about": about})
    return 0

