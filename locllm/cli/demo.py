"""``locllm demo``: the embedded default, end to end, with no data and no weights to download.

Renders held-out SynthPose scenes, localizes the 17 COCO keypoints, the neck and the pelvis (never
trained: asked only by its description) with the shipped demo checkpoint, prints PCK next to the
image-blind mean-pose baseline on the same scenes, and writes annotated pictures.

    locllm demo --out demo_output --json demo.json
"""

from __future__ import annotations

from .common import add_json_argument, write_json


def add_parser(parser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for the annotated pictures")
    parser.add_argument("--checkpoint", help="a demo-recipe checkpoint (default: the shipped one)")
    parser.add_argument("--num-images", type=int, default=100, help="held-out scenes to score")
    parser.add_argument("--pictures", type=int, default=3, help="annotated two-person pictures to write")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; the demo model is tiny, and on a busy machine one thread was 7x faster")
    add_json_argument(parser)


def run(args) -> int:
    import torch

    from ..engine import Localizer
    from ..engine.demo import demo_checkpoint, write_demo_pictures
    from ..training.demo_recipe import (
        DEMO_KEYPOINTS,
        NOVEL_KEYPOINTS,
        evaluate_pck,
        format_report,
        load_demo_setting,
    )

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or demo_checkpoint()
    difficulty, mean_pose = load_demo_setting(checkpoint)
    localizer = Localizer.from_pretrained(checkpoint, device=args.device)
    report = evaluate_pck(localizer, args.num_images, seed=20261126, mean_pose=mean_pose, difficulty=difficulty)
    print(format_report(report))
    pictures = write_demo_pictures(localizer, DEMO_KEYPOINTS, list(NOVEL_KEYPOINTS), args.out, args.pictures,
                                   difficulty=difficulty, mode=args.mode)
    print(f"time per person ({args.mode} decoding, {len(DEMO_KEYPOINTS)} keypoints): "
          f"{pictures['ms_per_person']:.0f} ms")
    print("The vision tower of this tiny model was pre-trained on SynthPose itself (the stand-in for DINOv2); "
          "see locllm/assets/demo/TRAINING.md.")
    print(f"pictures: {', '.join(pictures['pictures'])}")
    write_json(args.json, {"checkpoint": str(checkpoint), "held_out": report, **pictures})
    return 0
