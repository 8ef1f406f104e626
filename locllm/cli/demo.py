"""``locllm demo``: held-out SynthPose images through the shipped demo checkpoint, end to end.

    locllm demo --out demo_output --json demo.json
"""

from __future__ import annotations

from .common import add_json_argument, write_json


def add_parser(parser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for the annotated pictures")
    parser.add_argument("--checkpoint", help="a LocLLM checkpoint (default: the shipped demo checkpoint)")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    parser.add_argument("--device")
    add_json_argument(parser)


def run(args) -> int:
    from ..engine.demo import run_demo

    report = run_demo(args.out, args.checkpoint, args.num_images, mode=args.mode, device=args.device)
    print(f"LocLLM demo on {report['images']} held-out SynthPose images, {report['persons']} persons "
          f"({report['mode']} decoding)")
    print(f"{'keypoints':<22}{'PCK':>8}{'counted':>10}")
    for name, value in report["pck"].items():
        shown = f"{value:.3f}" if value is not None else "n/a"
        print(f"{name:<22}{shown:>8}{report['keypoints_counted'][name]:>10}")
    print(f"time per person: {report['ms_per_person']:.0f} ms (17 COCO keypoints + 1 described)")
    print("PCK@t: within t x the person's box size. The pelvis was never trained: it is asked by description.")
    print(f"pictures: {', '.join(report['pictures'])}")
    write_json(args.json, report)
    return 0
