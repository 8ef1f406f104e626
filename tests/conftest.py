"""Shared fixtures: the ../shared folder (real tokenizers, reference recordings) and tiny tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from locllm.data.synth import generate_synthpose

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOCLLM_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "reference-golden"
TOKENIZERS = SHARED / "tokenizers"


def pytest_configure(config):
    # The test models are tiny: a second intra-op thread gains nothing, and on a loaded machine OpenMP
    # threads spinning against each other made steps 30x slower (measured on 2 cores).
    import torch

    torch.set_num_threads(int(os.environ.get("LOCLLM_TEST_THREADS", "1")))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent: these tests need the project's shared test data (../shared next to the "
            "repository, or LOCLLM_SHARED=/path/to/shared)"
        )
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN)


@pytest.fixture(scope="session")
def llama2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_require(TOKENIZERS / "llama2")))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_require(TOKENIZERS / "smollm2")))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A SynthPose COCO set (one figure per 96 px image): (annotation folder, images). Test modules with a
    data set of their own define their own ``synth``."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthpose(root, num_images=6, seed=3, size=96, persons=1, fmt="coco", val_fraction=0.5,
                       difficulty="easy")
    return root / "annotations", root / "images"
