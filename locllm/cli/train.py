"""``locllm train CONFIG.yaml [--set key=value ...] [--resume [DIR]] [--json PATH]``

One process (CPU, or one GPU):

    locllm train configs/synthpose/tiny_cpu.yaml
    locllm train configs/paper/stage2_coco_12e.yaml --set model.init_from=runs/stage1/checkpoints/step-0004650

Several GPUs (DDP; the global batch ``optim.batch_size`` stays the same, accumulation shrinks):

    accelerate launch --config_file configs/accelerate/ddp_4gpu.yaml -m locllm train configs/paper/stage2_coco_12e.yaml
    torchrun --nproc_per_node 4 -m locllm train configs/paper/stage2_coco_12e.yaml

``--resume`` continues the newest checkpoint in the config's output_dir, ``--resume DIR`` that checkpoint.
Exit status 3: the loss became NaN or infinite; the message names the last good checkpoint. Exit status 130:
interrupted (Ctrl-C or SIGTERM); the message says how to resume.
"""

from __future__ import annotations

import logging
import shlex
import sys

from .common import add_json_argument, write_json
from .interrupts import sigterm_as_interrupt


def add_parser(parser) -> None:
    parser.add_argument("config", help="training config (YAML), e.g. configs/synthpose/tiny_cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                        help="continue a run: the newest checkpoint of output_dir, or checkpoint DIR")
    add_json_argument(parser)


def run(args) -> int:
    # imported here so that `locllm --help` does not load torch
    from accelerate import PartialState

    from ..training import checkpoint
    from ..training.config import load_config
    from ..training.trainer import TrainingDiverged, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config, args.overrides)
    resume = checkpoint.latest_checkpoint(config.output_dir) if args.resume == "latest" else args.resume
    try:
        with sigterm_as_interrupt():
            result = train(config, resume=resume)
    except TrainingDiverged as error:
        print(f"locllm train: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        if PartialState().is_main_process:
            print(f"\nlocllm train: {resume_hint(args, checkpoint.list_checkpoints(config.output_dir))}", file=sys.stderr)
        return 130
    if not PartialState().is_main_process:
        return 0
    summary = {
        "output_dir": config.output_dir,
        "checkpoint": result.checkpoint,
        "global_step": result.global_step,
        "total_steps": result.total_steps,
        "loss": result.loss,
        "steps_per_second": round(result.steps_per_second, 4),
        "samples_per_second": round(result.samples_per_second, 3),
        "trainable_parameters": result.trainable_parameters,
    }
    print(f"trained to step {result.global_step}/{result.total_steps}, loss {result.loss:.4f}, "
          f"{result.samples_per_second:.1f} samples/s; checkpoint: {result.checkpoint}")
    write_json(args.json, summary)
    return 0


def resume_hint(args, checkpoints: list) -> str:
    """What an interrupted run says: the checkpoint it can continue from and the command that does."""
    if not checkpoints:
        return "interrupted before it wrote a checkpoint: run the same command again"
    overrides = [word for item in args.overrides for word in ("--set", item)]
    command = shlex.join(["locllm", "train", args.config, *overrides, "--resume"])
    return f"interrupted; the last complete checkpoint is {checkpoints[-1]}: continue it with `{command}`"
