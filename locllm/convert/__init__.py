"""Converters from other codebases' checkpoints to ours: ``reference`` (the LocLLM release), ``dinov2``
(the reference DINOv2 towers)."""
