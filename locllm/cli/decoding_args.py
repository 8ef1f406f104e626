"""The decoding options of ``locllm predict``, ``eval`` and ``serve``: ``--decode``, ``--flip``, ``--score``.

Spelled out rather than imported (building a parser must not load torch); ``engine.refinement`` checks them.
The defaults are the measured best on held-out SynthPose scenes (benchmarks/README.md, "Decoding options"):
sub-digit decoding raised AP on both measured sets; the flip test and calibrated person scores did not, so
they are off. ``--mode reference`` is always the paper's reading.
"""

from __future__ import annotations

DECODES = ("greedy", "subdigit", "beam")
SCORES = ("mean_max", "calibrated")
DEFAULT_DECODE = "subdigit"
DEFAULT_SCORE = "mean_max"


def add_decoding_arguments(parser) -> None:
    parser.add_argument("--decode", choices=DECODES, default=DEFAULT_DECODE,
                        help=f"fast mode: how a coordinate is read from the digit distributions: greedy (the written "
                             f"digits, the paper's) or subdigit (an expectation around the first digit); default "
                             f"{DEFAULT_DECODE}")
    parser.add_argument("--flip", action="store_true",
                        help="fast mode: also ask the mirrored crop for each keypoint's flip partner and fuse "
                             "(about 2x the time; lowers AP on SynthPose, whose figures are coloured by side)")
    parser.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE,
                        help="fast mode: keypoint scores: mean_max (the reference's mean digit probability) or "
                             "calibrated (the chance of lying within PCK@0.1, from the checkpoint's "
                             f"calibration.json); person scores are their mean; default {DEFAULT_SCORE}")


def decoding_options(args):
    """The parsed arguments -> a :class:`~locllm.engine.refinement.DecodingOptions`."""
    from ..engine.refinement import DecodingOptions

    return DecodingOptions(decode=args.decode, flip=args.flip, score=args.score)
