"""Inference: the Localizer, its answering strategies (text decoding, heatmaps) and what predict / serve report."""

from .decoding import fast_decode, reference_decode
from .heatmap_answerer import HeatmapAnswerer
from .localizer import Localizer, PersonKeypoints
from .text_answerer import TextAnswerer

__all__ = ["HeatmapAnswerer", "Localizer", "PersonKeypoints", "TextAnswerer", "fast_decode", "reference_decode"]
