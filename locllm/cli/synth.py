"""``locllm synth``: write a SynthPose data set (rendered figures with exact keypoints, no download).

    locllm synth --out /tmp/s --num-images 200 --seed 3 --json /tmp/s.json
    locllm synth --out /tmp/crops --num-images 40000 --seed 1 --size 64 --persons 1 --difficulty easy
"""

from __future__ import annotations

from ..data.synth import DIFFICULTIES, WRITERS, generate_synthpose
from .common import add_json_argument, write_json


def add_parser(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (images/ and annotation files)")
    parser.add_argument("--num-images", type=int, required=True, help="images in train and val together")
    parser.add_argument("--seed", type=int, default=0, help="the same seed always writes the same files")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--persons", default="1-3", metavar="N|MIN-MAX", help="figures per image (default 1-3)")
    parser.add_argument("--format", default="coco", choices=sorted(WRITERS), help="annotation layout (default coco)")
    parser.add_argument("--difficulty", default="normal", choices=sorted(DIFFICULTIES),
                        help="easy: gentler poses, no truncation, little clutter (default normal)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of images in val (default 0.1)")
    parser.add_argument("--workers", type=int, help="rendering processes (default: one per CPU)")
    parser.add_argument("--contact-sheet", metavar="PATH", help="also write a PNG grid of annotated images")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out (and an existing --contact-sheet) as a whole")
    add_json_argument(parser)


def parse_persons(text: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1-3"`` -> (1, 3)."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise ValueError(f"--persons takes N or MIN-MAX, e.g. 1-3; got {text!r}") from None


def run(args) -> int:
    summary = generate_synthpose(
        args.out, args.num_images, args.seed, size=args.size, persons=parse_persons(args.persons), fmt=args.format,
        val_fraction=args.val_fraction, difficulty=args.difficulty, workers=args.workers,
        contact_sheet=args.contact_sheet, progress=True, overwrite=args.overwrite,
    )
    for split, counts in summary["splits"].items():
        print(f"{split}: {counts['images']} images, {counts['persons']} persons, "
              f"{counts['visible_keypoints']} visible / {counts['labelled_keypoints']} labelled keypoints "
              f"-> {counts['annotation_file']}")
    failed = {}
    if "self_check_ap" in summary:
        print("COCOeval self-check (ground truth as predictions), AP: "
              + ", ".join(f"{split} {ap}" for split, ap in summary["self_check_ap"].items()))
        failed = {split: ap for split, ap in summary["self_check_ap"].items() if ap is not None and ap != 1.0}
    if "contact_sheet" in summary:
        print(f"contact sheet: {summary['contact_sheet']}")
    print(f"{summary['num_images']} images in {summary['seconds']} s")
    write_json(args.json, summary)
    if failed:
        print(f"locllm synth: error: the self-check AP should be 1.0, got {failed}")
        return 1
    return 0
