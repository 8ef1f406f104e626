"""Inference: the Localizer, its person detector, its answering strategies (text decoding, heatmaps) and what predict / serve report."""

from .decoding import fast_decode, reference_decode
from .detection import Detections, PersonDetector
from .heatmap_answerer import HeatmapAnswerer
from .localizer import Localizer, PersonKeypoints
from .text_answerer import TextAnswerer

__all__ = ["Detections", "HeatmapAnswerer", "Localizer", "PersonDetector", "PersonKeypoints", "TextAnswerer", "fast_decode", "reference_decode"]
