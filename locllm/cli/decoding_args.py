"""The decoding options of ``locllm predict``, ``eval`` and ``serve``: ``--decode``, ``--flip``, ``--score``.

The defaults are the library's :func:`~locllm.engine.refinement.recommended_decoding`, the measured best on held-out
SynthPose scenes at about the greedy cost (benchmarks/README.md, "Decoding options"): sub-digit decoding, and
calibrated scores where the checkpoint has a calibration; both raised AP on both measured sets. The beam raised
it too but costs 2.5x; the flip test lowers it on SynthPose. ``--mode reference`` is always the paper's reading.
The choices and the default are spelled out rather than imported (building a parser must not load torch);
tests/engine/test_refinement.py checks that they are the library's.
"""

from __future__ import annotations

from pathlib import Path

DECODES = ("greedy", "subdigit", "beam")
SCORES = ("mean_max", "calibrated")
DEFAULT_DECODE = "subdigit"  # engine.refinement.RECOMMENDED_DECODE
CALIBRATION_FILE = "calibration.json"  # models.calibration.CALIBRATION_FILE


def add_decoding_arguments(parser) -> None:
    parser.add_argument("--decode", choices=DECODES, default=DEFAULT_DECODE,
                        help="fast mode: how a coordinate is read from the digit distributions: greedy (the written "
                             "digits, the paper's), subdigit (an expectation around the first digit) or beam (the "
                             f"runner-up first digit decoded too: 2.5x the time); default {DEFAULT_DECODE}")
    parser.add_argument("--flip", action="store_true",
                        help="fast mode: also ask the mirrored crop for each keypoint's flip partner and fuse "
                             "(about 2x the time; lowers AP on SynthPose, whose figures are coloured by side)")
    parser.add_argument("--score", choices=SCORES,
                        help="fast mode: keypoint scores: mean_max (the reference's mean digit probability) or "
                             "calibrated (the chance of lying within PCK@0.1, from the checkpoint's "
                             "calibration.json); person scores are their mean; default calibrated where the "
                             "checkpoint has a calibration, else mean_max")


def decoding_options(args, checkpoint: str | Path):
    """The parsed arguments and the checkpoint folder -> a :class:`~locllm.engine.refinement.DecodingOptions`."""
    from ..engine.refinement import recommended_decoding

    return recommended_decoding(checkpoint, decode=args.decode, flip=args.flip, score=args.score)
