"""``locllm predict``: keypoints on your own images, as JSON and as a picture.

    locllm predict photo.jpg --boxes 40,30,120,260 --describe "belly button=The navel, in the middle of the belly." --out vis.png
    locllm predict val/*.jpg --boxes detections.json --score-threshold 0.5 --json predictions.json
    locllm predict photo.jpg --checkpoint runs/my-keypoints/checkpoints/step-0000600 --keypoints "left toe,head top"

A checkpoint trained on keypoints of your own (``descriptions.json`` in its folder) is asked them by name alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..data.images import ImageReadError, read_image_rgb
from ..engine.boxes import image_key, parse_box, read_detection_boxes
from ..engine.report import prediction_report, requested_keypoints
from .common import add_json_argument, write_json
from .decoding_args import add_decoding_arguments, decoding_options


def add_parser(parser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--checkpoint", help="a LocLLM checkpoint folder (default: the shipped demo checkpoint)")
    parser.add_argument("--boxes", help="'x,y,w,h' for every image, or a COCO detection-results JSON; "
                                        "default: the whole image is one person")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="minimum detection score (--boxes FILE)")
    parser.add_argument("--keypoints", default="coco",
                        help="a keypoint set (coco, mpii, h36m) or comma-separated keypoint names (built-in ones, "
                             "or those the checkpoint was trained on)")
    parser.add_argument("--describe", action="append", default=[], metavar="NAME=DESCRIPTION",
                        help="ask also for a keypoint given by its description (repeatable)")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    add_decoding_arguments(parser)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--out", help="write the annotated picture here (with several images: a folder)")
    add_json_argument(parser)


def run(args) -> int:
    from ..engine import Localizer
    from ..engine.demo import demo_checkpoint

    images = [Path(p) for p in args.images]
    for path in images:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
    detections = None
    if args.boxes and Path(args.boxes).suffix == ".json":
        detections = read_detection_boxes(args.boxes, args.score_threshold)
    typed_box = parse_box(args.boxes) if args.boxes and detections is None else None
    checkpoint = args.checkpoint or demo_checkpoint()
    localizer = Localizer.from_pretrained(checkpoint, device=args.device, decoding=decoding_options(args, checkpoint))
    kp_set, novel = requested_keypoints(args.keypoints, args.describe, localizer.keypoint_set)

    report, errors, seconds = [], {}, 0.0
    # Images go to the localizer a group at a time, so persons of different images share batches
    # while only one group's pixels are held.
    for first in range(0, len(images), localizer.persons_per_batch):
        group, pixels, group_boxes = images[first:first + localizer.persons_per_batch], [], []
        for path in group:
            try:
                pixels.append(read_image_rgb(path))
            except ImageReadError as error:  # one unreadable file does not lose the others' answers
                errors[str(path)] = str(error)
                pixels.append(None)
                print(f"{path.name}: skipped: {error}", file=sys.stderr)
                continue
            boxes = typed_box
            if detections is not None:
                key = image_key(path, detections)
                boxes = detections.get(key, np.zeros((0, 4))) if key else np.zeros((0, 4))
            group_boxes.append(boxes)
        start = time.perf_counter()
        answers = iter(localizer.localize_many([image for image in pixels if image is not None], group_boxes,
                                               kp_set, args.mode))
        seconds += time.perf_counter() - start
        for path, picture in zip(group, pixels, strict=True):
            persons = [] if picture is None else next(answers)
            report.append((str(path), persons))
            for p in persons:
                flag = f"  ({p.error})" if p.error else ""
                print(f"{path.name}: person at {np.round(p.box, 1).tolist()} score {p.score:.3f}{flag}")
            if args.out and picture is not None:
                write_picture(picture, persons, kp_set, novel, Path(args.out), path, several=len(images) > 1)
    write_json(args.json, prediction_report(args.mode, kp_set, report, seconds, errors))
    if errors:
        raise ValueError(f"{len(errors)} of {len(images)} images could not be read (the others were answered)")
    return 0


def write_picture(picture, persons, kp_set, novel: list[bool], out: Path, path: Path, several: bool) -> None:
    """The image with each person's skeleton; novel keypoints labelled by name."""
    from ..viz import draw_keypoints

    labels = [k.name if n else "" for k, n in zip(kp_set, novel, strict=True)]
    for p in persons:
        if p.error is None:
            picture = draw_keypoints(picture, p.keypoints[:, :2], kp_set, scores=p.scores, visible=p.valid,
                                     labels=labels)
    if several:
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"{path.stem}_keypoints.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")

