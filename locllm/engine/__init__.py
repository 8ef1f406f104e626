"""Inference: the Localizer, its person detector, and how it answers (text decoding with its refinement and
calibration, heatmaps). What uses the Localizer (video, predict's and serve's reports, the benchmark, the demo's
pictures, person boxes) is in ``apis/``."""

from .decoding import fast_decode, reference_decode
from .detection import Detections, PersonDetector
from .heatmap_answerer import HeatmapAnswerer
from .localizer import Localizer, PersonKeypoints
from .text_answerer import TextAnswerer

__all__ = ["Detections", "HeatmapAnswerer", "Localizer", "PersonDetector", "PersonKeypoints", "TextAnswerer", "fast_decode", "reference_decode"]
