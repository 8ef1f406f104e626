"""``locllm eval``: a checkpoint's COCO / Human-Art AP, MPII PCKh, Human3.6M MPJPE, or PCK of your own keypoints.

    locllm eval --checkpoint ckpt --dataset coco --ann person_keypoints_val2017.json --images val2017 \\
        --predictions preds.jsonl --json metrics.json
    locllm eval --checkpoint ckpt --dataset coco --ann ... --images ... --boxes dets.json --det-score-threshold 0.5
    locllm eval --checkpoint ckpt --dataset coco --ann ... --images ... --boxes detector:PekingU/rtdetr_r50vd
    locllm eval --checkpoint ckpt --dataset coco --ann ... --images ... --held-out paper
    locllm eval --checkpoint ckpt --dataset mpii --ann mpii/annot/valid.json --images mpii/images
    locllm eval --checkpoint ckpt3d --dataset h36m --ann h36m/annotations/val.json --images h36m/images
    locllm eval --checkpoint ckpt --dataset custom --ann val.json --images images --keypoints my_keypoints.yaml \
        --keypoint-field extra_keypoints
    torchrun --nproc-per-node 4 -m locllm eval ...            # one process per GPU

An interrupted run resumes from its --predictions file when the same command is run again.
"""

from __future__ import annotations

import sys

from .common import add_json_argument, write_json
from .decoding_args import add_decoding_arguments, decoding_options
from .interrupts import sigterm_as_interrupt

# Spelled out rather than imported: building the parser must not load torch and pycocotools
# (evaluation.tasks.DATASETS is the same tuple; build_task checks it).
DATASETS = ("coco", "humanart", "mpii", "h36m", "custom")
DTYPES = ("bfloat16", "float16", "float32")


def add_parser(parser) -> None:
    parser.add_argument("--checkpoint", help="a LocLLM checkpoint folder (default: the shipped demo checkpoint)")
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="the benchmark and its annotation layout; custom: a COCO-format file with your own "
                             "keypoints (--keypoints TABLE), scored by PCK")
    parser.add_argument("--ann", required=True, metavar="FILE", help="annotation file (COCO json, MPII valid.json, "
                                                                     "Human3.6M json)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder the annotated file names are in")
    parser.add_argument("--boxes", default="gt", metavar="gt|DETECTIONS.json|detector:PATH",
                        help="coco/humanart: person boxes from the ground truth (default, the reference's protocol), "
                             "a COCO detection-results file (the usual protocol), or those of a person detector "
                             "(a Hugging Face object-detection folder or Hub repo id), cached as such a file")
    parser.add_argument("--det-score-threshold", type=float, default=0.0,
                        help="with --boxes FILE: ask only about detections scored at least this (default 0)")
    parser.add_argument("--held-out", metavar="paper|NAMES",
                        help="coco/humanart: keypoint types left out of training ('paper' or comma-separated "
                             "names), scored on their own next to the seen ones")
    parser.add_argument("--keypoints", metavar="FILE",
                        help="descriptions to ask with: a JSON/YAML {name: description} table, or the reference's "
                             "constants.py (its names and descriptions); default ours. A checkpoint's own "
                             "descriptions.json still wins for the names it lists. custom: the keypoint table that "
                             "defines the keypoints, in the annotations' order (required)")
    parser.add_argument("--keypoint-field", default="keypoints", metavar="KEY",
                        help="custom: the annotation key holding the keypoints (default keypoints; SynthPose's "
                             "extra types: extra_keypoints)")
    parser.add_argument("--mpii-gt", metavar="gt_valid.mat",
                        help="mpii: head boxes for PCKh (default: gt_valid.mat beside --ann, else head_box entries)")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast",
                        help="fast (default) or the reference implementation's decoding")
    add_decoding_arguments(parser)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available; one GPU per process "
                                         "under torchrun)")
    parser.add_argument("--dtype", choices=DTYPES, help="model precision (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8, help="persons per forward pass (default 8)")
    parser.add_argument("--predictions", metavar="FILE.jsonl",
                        help="write each person's prediction here as it comes; an existing file is resumed")
    parser.add_argument("--overwrite-predictions", action="store_true",
                        help="start over instead of resuming an existing --predictions file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_argument(parser)


def parse_held_out(text: str | None) -> str | list[str]:
    if not text:
        return []
    if text.strip() == "paper":
        return "paper"
    return [name.strip() for name in text.split(",") if name.strip()]


def run(args) -> int:
    import torch

    from ..apis.demo import demo_checkpoint
    from ..apis.detector_boxes import detector_boxes_file
    from ..engine import Localizer
    from ..evaluation.distributed import evaluation_ranks
    from ..evaluation.loop import run_evaluation
    from ..evaluation.tasks import asked_keypoints, build_task
    from ..models.hub import resolve_pretrained
    from .eval_report import format_report

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    boxes = args.boxes
    if boxes.startswith("detector:") and args.dataset in ("coco", "humanart"):
        boxes, reused = detector_boxes_file(boxes.removeprefix("detector:"), args.ann, args.images,
                                            device=args.device, progress=not args.no_progress)
        print(f"detector boxes: {'reused' if reused else 'wrote'} {boxes}", file=sys.stderr)
    task = build_task(args.dataset, args.ann, args.images, boxes=boxes,
                      detection_score_threshold=args.det_score_threshold, held_out=parse_held_out(args.held_out),
                      keypoints=asked_keypoints(args.dataset, args.keypoints), mpii_ground_truth=args.mpii_gt,
                      keypoint_field=args.keypoint_field)
    # after the task: a bad annotation file is reported before anything is downloaded or loaded
    checkpoint = str(resolve_pretrained(args.checkpoint).resolve() if args.checkpoint else demo_checkpoint())
    with evaluation_ranks() as ranks:
        device = ranks.device() if ranks.world_size > 1 else args.device
        dtype = getattr(torch, args.dtype) if args.dtype else None
        localizer = Localizer.from_pretrained(checkpoint, device=device, dtype=dtype, persons_per_batch=args.batch_size,
                                              decoding=decoding_options(args, checkpoint))
        try:
            with sigterm_as_interrupt():
                result = run_evaluation(localizer, task, mode=args.mode, predictions=args.predictions,
                                        overwrite=args.overwrite_predictions, batch_size=args.batch_size,
                                        progress=not args.no_progress, ranks=ranks, checkpoint=checkpoint)
        except KeyboardInterrupt:
            if args.predictions:
                print(f"\ninterrupted: run the same command again to resume from {args.predictions}", file=sys.stderr)
            else:
                print("\ninterrupted: no answer was kept; give --predictions FILE to make a run resumable",
                      file=sys.stderr)
            return 130
    if ranks.is_main:
        print(format_report(result, task))
        write_json(args.json, result)
    return 0
