"""The web demo (``locllm serve``): a gradio page and API around a :class:`~locllm.engine.Localizer`."""

from .app import LocalizeResult, build_app, localize_request, offline_theme, render_examples

__all__ = ["LocalizeResult", "build_app", "localize_request", "offline_theme", "render_examples"]
