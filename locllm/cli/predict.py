"""``locllm predict``: keypoints on your own images, as JSON and as a picture.

    locllm predict photo.jpg --boxes 40,30,120,260 --describe "belly button=The navel, in the middle of the belly." --out vis.png
    locllm predict val/*.jpg --boxes detections.json --score-threshold 0.5 --json predictions.json
    locllm predict photo.jpg --checkpoint runs/my-keypoints/checkpoints/step-0000600 --keypoints "left toe,head top"
    locllm predict group.jpg --detector PekingU/rtdetr_r50vd --out vis.png     # every person the detector finds
    locllm predict clip.mp4 --detect-every 5 --out clip_keypoints.mp4 --json clip_keypoints.jsonl   # a video
    locllm predict photos/ --jsonl photos.jsonl --coco-results photos_coco.json   # a data set (predict_dataset.py)

A checkpoint trained on keypoints of your own (``descriptions.json`` in its folder) is asked them by name alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..apis.image_prediction import ImagePrediction, check_image_files, given_boxes
from ..apis.person_boxes import parse_box
from ..apis.report import requested_keypoints
from ..apis.video import is_video
from ..data.outputs import check_not_replacing, check_output_file
from .common import add_json_argument, load_localizer, warn_unreadable, write_json
from .decoding_args import add_decoding_arguments
from .predict_dataset import add_arguments as add_dataset_arguments
from .predict_dataset import run as predict_dataset
from .predict_pictures import picture_targets, write_picture


def add_parser(parser) -> None:
    parser.add_argument("images", nargs="+", help="image files, or one video (mp4, avi, ...), or with --jsonl one "
                                                  "data set (a folder, a .txt list or a COCO .json file)")
    parser.add_argument("--checkpoint", help="a LocLLM checkpoint folder (default: the shipped demo checkpoint)")
    parser.add_argument("--boxes", help="'x,y,w,h' for every image, or a COCO detection-results JSON; "
                                        "default: the persons --detector finds, else the whole image is one person")
    parser.add_argument("--detector", metavar="PATH", help="a person detector (a Hugging Face object-detection "
                                                           "folder or Hub repo id: DETR, RT-DETR, YOLOS, ...)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="minimum detection score (--boxes FILE)")
    parser.add_argument("--keypoints", default="coco",
                        help="a keypoint set (coco, mpii, h36m) or comma-separated keypoint names (built-in ones, "
                             "or those the checkpoint was trained on)")
    parser.add_argument("--describe", action="append", default=[], metavar="NAME=DESCRIPTION",
                        help="ask also for a keypoint given by its description (repeatable)")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    add_decoding_arguments(parser)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--out", help="write the annotated picture here (with several images: a folder; "
                                      "a video: the annotated video, default VIDEO_keypoints.mp4)")
    parser.add_argument("--detect-every", type=int, default=1, metavar="N",
                        help="a video: find persons every N-th frame; between, follow each by its keypoints")
    add_json_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist (else refused); "
                                                                 "with --jsonl: start over")
    add_dataset_arguments(parser)


def run(args) -> int:
    if args.jsonl:
        return predict_dataset(args)
    images = [Path(p) for p in args.images]
    if any(is_video(path) for path in images):
        return predict_video(args, images)
    check_image_files(images)
    # Every output is checked before the model is loaded: a picture that cannot be written must not cost
    # the answers (or the time) of a whole run.
    pictures = picture_targets(images, args.out) if args.out else {}
    if args.json:
        check_output_file(args.json, "JSON output")
    check_not_replacing([*pictures.values(), *([args.json] if args.json else [])], args.overwrite)
    boxes = given_boxes(args.boxes, args.score_threshold, images)
    localizer = load_localizer(args)
    kp_set, novel = requested_keypoints(args.keypoints, args.describe, localizer.keypoint_set)
    warn_unreadable(localizer, kp_set)

    prediction, unwritten = ImagePrediction(args.mode, kp_set), []
    for path, picture, persons in prediction.predict_files(localizer, images, boxes):
        if picture is not None and not persons:
            print(f"{path.name}: no person found")
        for p in persons:
            flag = f"  ({p.error})" if p.error else ""
            print(f"{path.name}: person at {np.round(p.box, 1).tolist()} score {p.score:.3f}{flag}")
        if pictures and picture is not None:
            failure = write_picture(picture, persons, kp_set, novel, pictures[path])
            unwritten += [failure] if failure else []
    write_json(args.json, prediction.report())
    # Answers are all written above; what went wrong is said now, with a non-zero exit.
    if prediction.errors:
        raise ValueError(f"{len(prediction.errors)} of {len(images)} images could not be read (the others were "
                         "answered)")
    if unwritten:
        raise OSError(f"{len(unwritten)} of {len(pictures)} pictures could not be written (the answers are "
                      f"{'in ' + args.json if args.json else 'printed above'}): {unwritten[0]}")
    return 0


def predict_video(args, paths: list[Path]) -> int:
    """One video -> an annotated video (``--out``) and one JSON line per frame (``--json``, default beside
    the video's output); persons by the localizer's detector if it has one, else ``--boxes`` or the whole frame."""
    from ..apis.video import FixedBoxes, localize_video

    if len(paths) != 1:
        raise ValueError("give one video at a time (or only images)")
    if not paths[0].is_file():
        raise FileNotFoundError(f"video not found: {paths[0]}")
    out = Path(args.out or f"{paths[0].stem}_keypoints.mp4")
    jsonl = Path(args.json or out.with_suffix(".jsonl"))
    check_output_file(out, "video output")
    check_output_file(jsonl, "JSON lines output")
    check_not_replacing([out, jsonl], args.overwrite)
    localizer = load_localizer(args)
    kp_set, _ = requested_keypoints(args.keypoints, args.describe, localizer.keypoint_set)
    warn_unreadable(localizer, kp_set)
    detector = localizer if localizer.detector is not None else None
    if args.boxes:  # typed boxes win over a detector, as for images
        detector = FixedBoxes(parse_box(args.boxes))
    try:
        summary = localize_video(localizer, paths[0], out, jsonl, kp_set, args.mode, detector, args.detect_every)
    except KeyboardInterrupt:
        kept = " and ".join(str(p) for p in (out, jsonl) if p.exists())
        print(f"\n{paths[0].name}: stopped before its last frame, nothing written"
              + (f"; {kept} kept as they were" if kept else ""), file=sys.stderr)
        raise
    print(f"{paths[0].name}: {summary.frames} frames, {summary.persons} persons, {summary.tracks} ids, "
          f"{summary.ms_per_frame:.1f} ms per frame; wrote {out} and {jsonl}")
    if summary.skipped:
        print(f"{paths[0].name}: {summary.skipped} frames could not be decoded (skipped; the others written)",
              file=sys.stderr)
    return 0
