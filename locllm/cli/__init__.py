"""The ``locllm`` command. Each subcommand is one module here with ``add_parser`` and ``run``;
the modules stay thin and call into the library, so everything the CLI does is also an API."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "synth": "Generate a SynthPose data set (rendered figures with exact keypoints)",
    "train": "Train LocLLM (stage 1 captions / stage 2 keypoints) from a YAML config",
    "eval": "Evaluate a checkpoint (COCO AP, MPII PCKh, Human3.6M MPJPE, novel keypoints)",
    "predict": "Localize keypoints on your own images",
    "bench": "Measure persons/s of the reference and fast decoding paths",
    "demo": "Run the embedded default end to end: no data, no weights needed",
    "import-reference": "Convert a checkpoint of the authors' release into ours",
    "serve": "Start the web demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locllm", description=__doc__.split("\n")[0])
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
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, PermissionError, ValueError, KeyError) as err:
        # User errors end with one readable line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"locllm {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
