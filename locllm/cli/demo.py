"""``locllm demo``: the embedded default, end to end, with no data and no weights to download.

Renders held-out SynthPose scenes, localizes the 17 COCO keypoints, the neck and the pelvis (never
trained: asked only by its description) with the shipped demo checkpoint, prints PCK next to the
image-blind mean-pose baseline on the same scenes, and writes annotated pictures.

    locllm demo --out demo_output --json demo.json
"""

from __future__ import annotations

from .common import add_json_argument, write_json

REPORT_LABELS = {"coco": "COCO 17 keypoints", "neck": "neck (trained, asked by description)",
                 "pelvis": "pelvis (never trained, zero-shot)"}


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

    from ..apis.demo import demo_checkpoint, write_demo_pictures
    from ..data.synth.demo import DEMO_KEYPOINTS, NOVEL_KEYPOINTS, load_demo_setting
    from ..engine import Localizer
    from ..evaluation.demo import evaluate_pck

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


def format_report(report: dict) -> str:
    """The held-out report of :func:`~locllm.evaluation.demo.evaluate_pck` as a table: model and mean-pose baseline."""
    lines = [
        f"held-out SynthPose ({report['difficulty']}): {report['num_images']} scenes (seed {report['seed']}); "
        "PCK normalizer: "
        f"{report['normalizer']}; {report['malformed_answers']} malformed answers",
        f"{'keypoints':<40} {'PCK@0.1':>8} {'PCK@0.05':>9}   mean-pose baseline: {'PCK@0.1':>8} {'PCK@0.05':>9}",
    ]
    for group, label in REPORT_LABELS.items():
        r = report[group]
        lines.append(f"{label + ' (n=' + str(r['num_keypoints']) + ')':<40} {r['pck@0.1']:>8.3f} {r['pck@0.05']:>9.3f}"
                     f"   {'':<20}{r['baseline_pck@0.1']:>8.3f} {r['baseline_pck@0.05']:>9.3f}")
    return "\n".join(lines)
