"""``locllm bench``: persons/s of the reference and fast decoding paths, measured in one run.

    locllm bench --config small --json bench.json
    locllm bench --config paper --dtype bfloat16 --device cuda     # ViT-L/14 + 7B Llama, random weights
    locllm bench --config small --base smollm2 --base-layers 8     # the small tower + SmolLM2's real weights
"""

from __future__ import annotations

from .common import add_json_argument, positive_int, write_json


def add_parser(parser) -> None:
    parser.add_argument("--config", choices=("tiny", "small", "paper"), default="small")
    parser.add_argument("--persons", type=positive_int, default=8, help="persons per run (one batch in fast mode)")
    parser.add_argument("--keypoints", default="coco")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of the frozen base weights")
    parser.add_argument("--tokenizer", help="a Hugging Face tokenizer folder, or smollm2 (default: the word-level demo tokenizer)")
    parser.add_argument("--base", help="a causal LM folder, or smollm2, instead of the config's random LM "
                        "(the tokenizer then defaults to its own)")
    parser.add_argument("--base-layers", type=positive_int, metavar="N", help="keep the first N layers of --base")
    parser.add_argument("--repeats", type=positive_int, default=2)
    add_json_argument(parser)


def run(args) -> int:
    from ..apis.benchmark import run_benchmark

    tokenizer = None
    if args.tokenizer or args.base:
        from transformers import AutoTokenizer

        from ..models.gguf import resolve_base_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_base_path(args.tokenizer or args.base))
    result = run_benchmark(args.config, args.persons, args.keypoints, args.device, args.dtype, tokenizer,
                           args.repeats, base=args.base, base_layers=args.base_layers)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    write_json(args.json, result)
    return 0
