"""``locllm import-reference``: convert a checkpoint of the authors' release into ours.

    locllm import-reference checkpoints/locllm-coco-ref checkpoints/locllm-coco \\
        --dino weights/dinov2_vitl14_pretrain.pth --llm weights/vicuna-7b-v1.5 \\
        --descriptions LocLLM/datasets/constants.py

Without ``--llm`` / ``--dino`` (and with the paths in the reference config.json absent here) the
checkpoint's own copies of the frozen bases are written into ours, which then stands alone.
"""

from __future__ import annotations

from dataclasses import asdict

from ..convert.reference import import_reference_checkpoint
from .common import add_json_argument, write_json


def add_parser(parser) -> None:
    parser.add_argument("src_dir", metavar="SRC_DIR", help="the reference checkpoint folder (config.json + weights)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write our checkpoint")
    parser.add_argument("--descriptions", metavar="CONSTANTS_PY",
                        help="the reference's datasets/constants.py: its descriptions become descriptions.json")
    parser.add_argument("--dino", metavar="PTH", help="the base DINOv2 .pth (default: the config's dino_path)")
    parser.add_argument("--llm", metavar="FOLDER", help="the base LLM folder (default: the config's llama_path)")
    parser.add_argument("--tokenizer", metavar="FOLDER", help="tokenizer folder to use instead of SRC_DIR's")
    parser.add_argument("--vision-heads", type=int, metavar="N",
                        help="attention heads of the vision tower (default: width / 64, i.e. 16 for ViT-L)")
    parser.add_argument("--coordinate-ndim", type=int, choices=(2, 3), default=2,
                        help="3 for the Human3.6M checkpoints, which answer (x, y, depth)")
    parser.add_argument("--merge", action="store_true", help="fold LoRA into the bases: a standalone model")
    parser.add_argument("--allow-unused", action="store_true",
                        help="import even when some reference tensors map to nothing (they are listed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty OUT_DIR as a whole (e.g. an earlier import); refused without it")
    add_json_argument(parser)


def run(args) -> int:
    report = import_reference_checkpoint(
        args.src_dir,
        args.out_dir,
        dino=args.dino,
        llm=args.llm,
        tokenizer=args.tokenizer,
        descriptions=args.descriptions,
        vision_heads=args.vision_heads,
        coordinate_ndim=args.coordinate_ndim,
        merge=args.merge,
        allow_unused=args.allow_unused,
        overwrite=args.overwrite,
    )
    print(f"locllm import-reference: {args.src_dir} -> {args.out_dir}")
    for line in report.lines():
        print("  " + line)
    write_json(args.json, asdict(report))
    return 0
