"""``locllm predict SOURCE --jsonl OUT``: keypoints for a whole data set (see :mod:`locllm.apis.dataset_prediction`).

    locllm predict photos/ --jsonl photos.jsonl --coco-results photos_coco.json
    locllm predict list.txt --image-root /data --jsonl out.jsonl --boxes detections.json
    locllm predict val.json --image-root val2017 --jsonl out.jsonl --detector PekingU/rtdetr_r50vd
    torchrun --nproc-per-node 4 -m locllm predict photos/ --jsonl photos.jsonl     # one process per GPU

The same command after an interruption goes on where it stopped; ``--overwrite`` starts over.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.outputs import check_not_replacing, check_output_file
from .common import positive_int, warn_unreadable, write_json
from .decoding_args import decoding_options
from .interrupts import sigterm_as_interrupt


def add_arguments(parser) -> None:
    group = parser.add_argument_group("a whole data set (with --jsonl)")
    group.add_argument("--jsonl", metavar="OUT.jsonl",
                       help="answer a data set: one image argument, a folder (recursive), a .txt file with one "
                            "image path per line or a COCO .json file's images; one JSON line per image is "
                            "written here as it is answered, and an existing file is resumed")
    group.add_argument("--coco-results", metavar="PATH", help="at the end, also write COCO keypoint results here")
    group.add_argument("--image-root", metavar="DIR", help="where the relative paths of a list or COCO file are "
                                                          "(default: the current folder / the COCO file's folder)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="persons per forward pass (default 8)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..apis.dataset_prediction import predict_dataset
    from ..apis.demo import demo_checkpoint
    from ..apis.image_sources import ImageSource
    from ..apis.person_boxes import PersonBoxes
    from ..apis.report import requested_keypoints
    from ..engine import Localizer
    from ..evaluation.distributed import evaluation_ranks
    from ..models.hub import resolve_pretrained

    if len(args.images) != 1:
        raise ValueError(f"--jsonl answers one data set: give one folder, list or COCO file, not {len(args.images)}")
    if args.out:
        raise ValueError("--out draws pictures of image files; a data set's answers go to --jsonl")
    if args.boxes and Path(args.boxes).suffix != ".json":
        raise ValueError("--boxes with --jsonl is a COCO detection-results .json file")
    # Every input and output is checked before the model is loaded.
    source = ImageSource(args.images[0], args.image_root)
    source.survey()
    check_output_file(args.jsonl, "predictions file")
    extra_outputs = [path for path in (args.coco_results, args.json) if path]
    for path in extra_outputs:
        check_output_file(path, "output")
    check_not_replacing(extra_outputs, args.overwrite)
    boxes = PersonBoxes(args.boxes, args.score_threshold) if args.boxes else None
    checkpoint = str(resolve_pretrained(args.checkpoint).resolve() if args.checkpoint else demo_checkpoint())
    with evaluation_ranks() as ranks:
        device = ranks.device() if ranks.world_size > 1 else args.device
        localizer = Localizer.from_pretrained(checkpoint, device=device, detector=None if args.boxes else args.detector,
                                              persons_per_batch=args.batch_size,
                                              decoding=decoding_options(args, checkpoint))
        kp_set, _ = requested_keypoints(args.keypoints, args.describe, localizer.keypoint_set)
        if ranks.is_main:
            warn_unreadable(localizer, kp_set)
        try:
            with sigterm_as_interrupt():
                summary = predict_dataset(localizer, source, args.jsonl, keypoints=kp_set, mode=args.mode, boxes=boxes,
                                          coco_results=args.coco_results, overwrite=args.overwrite,
                                          progress=not args.no_progress, ranks=ranks, checkpoint=checkpoint)
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to go on from {args.jsonl}", file=sys.stderr)
            return 130
    if not ranks.is_main:
        return 0
    wrote = " and ".join(str(p) for p in (args.jsonl, args.coco_results) if p)
    print(f"{summary['images']} images ({summary['images_resumed']} answered before, {summary['images_answered']} "
          f"now), {summary['persons']} persons, {summary['images_per_second'] or 0:.2f} images/s; wrote {wrote}")
    write_json(args.json, summary)
    if summary["unreadable_images"]:
        raise ValueError(f"{summary['unreadable_images']} images could not be read (their lines in {args.jsonl} "
                         "say why; the others were answered)")
    return 0
