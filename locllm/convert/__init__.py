"""The importer of the authors' LocLLM release (``reference``) into our checkpoints; the weight sources the
models read themselves (the reference DINOv2 towers, the SmolLM2 GGUF) live in ``models/``."""
