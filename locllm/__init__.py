"""LocLLM: human keypoint localization by asking a multimodal LLM where each keypoint is."""

__version__ = "0.1.0"
