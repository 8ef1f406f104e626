"""Converters from other codebases' checkpoints to ours."""

from .reference import ImportReport, import_reference_checkpoint

__all__ = ["ImportReport", "import_reference_checkpoint"]
