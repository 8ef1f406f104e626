"""Small helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.outputs import check_output_file, write_text_atomically


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count of persons, repeats, layers), refused in one line otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def load_localizer(args):
    """The Localizer of ``predict`` and ``serve``: ``--checkpoint`` (default: the shipped demo checkpoint) on
    ``--device``, with ``--detector`` and the decoding arguments."""
    from ..apis.demo import demo_checkpoint
    from ..engine import Localizer
    from .decoding_args import decoding_options

    checkpoint = args.checkpoint or demo_checkpoint()
    return Localizer.from_pretrained(checkpoint, device=args.device, detector=args.detector,
                                     decoding=decoding_options(args, checkpoint))


def warn_unreadable(localizer, kp_set) -> None:
    """Say on stderr which asked keypoints the model cannot read (see ``Localizer.unreadable_keypoints``)."""
    from ..apis.report import unreadable_message

    message = unreadable_message(localizer.unreadable_keypoints(kp_set))
    if message:
        print(f"warning: {message}", file=sys.stderr)


def add_json_argument(parser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures of this run to PATH as JSON")


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    # Serialized first, so a payload that cannot be written as JSON leaves no file; then atomically, so an
    # interrupted or failed write leaves the earlier file, never half of one.
    text = json.dumps(payload, indent=2, default=_to_builtin) + "\n"
    write_text_atomically(check_output_file(path, "JSON output"), text)


def check_device(name: str) -> None:
    """Refuse, before any work, a ``--device`` that torch does not know or this machine does not have."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} usable CUDA devices "
                         "(torch.cuda.is_available() is False or the index is too high): use --device cpu "
                         "or another index")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine: use --device cpu")


def _to_builtin(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
