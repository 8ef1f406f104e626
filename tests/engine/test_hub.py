"""Checkpoints and detectors named by a Hugging Face Hub repo id, resolved offline (``HF_HUB_OFFLINE=1``) from a
local cache laid out as huggingface_hub writes it."""

import hashlib
import json
import os

import cv2
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import AutoModel

from locllm.cli import main
from locllm.engine import Localizer, PersonDetector
from locllm.models import LocLLMForKeypointLocalization
from locllm.models.hub import resolve_pretrained

from .test_detection import tiny_detector
from .test_localizer import IMAGE

REVISION = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache, repo_id: str, folder, subfolder: str = "") -> None:
    """Put ``folder``'s files in ``cache`` as a download of ``repo_id`` leaves them: the contents in
    ``blobs/<sha256>``, ``snapshots/<revision>/[subfolder/]<name>`` links to them, ``refs/main`` naming the
    revision."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION / subfolder
    snapshot.mkdir(parents=True)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, char_checkpoint):
    """An offline Hub whose cache holds org/tiny-locllm (the char checkpoint) and org/tiny-detector."""
    cache = tmp_path / "hf" / "hub"
    populate_hub_cache(cache, "org/tiny-locllm", char_checkpoint)
    populate_hub_cache(cache, "org/tiny-detector", tiny_detector(tmp_path / "detector", confident=True))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both when imported, which happened before this test
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_localizer_and_detector_by_hub_repo_id(offline_hub, char_checkpoint, tmp_path):
    snapshot = offline_hub / "models--org--tiny-locllm" / "snapshots" / REVISION
    assert resolve_pretrained("org/tiny-locllm") == snapshot
    localizer = Localizer.from_pretrained("org/tiny-locllm", device="cpu", detector="org/tiny-detector")
    assert isinstance(localizer.detector, PersonDetector)
    by_folder = Localizer.from_pretrained(char_checkpoint, device="cpu",
                                          detector=PersonDetector.from_pretrained(tmp_path / "detector", device="cpu"))
    persons, expected = localizer.localize(IMAGE, keypoints=["nose"]), by_folder.localize(IMAGE, keypoints=["nose"])
    assert len(persons) == len(expected) >= 1
    for a, b in zip(persons, expected, strict=True):
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_predict_by_hub_repo_ids(offline_hub, tmp_path):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), IMAGE)
    out = tmp_path / "out.json"
    assert main(["predict", str(image), "--checkpoint", "org/tiny-locllm", "--detector", "org/tiny-detector",
                 "--keypoints", "nose", "--device", "cpu", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["images"][0]["persons"]) >= 1


def test_a_repo_id_not_in_the_offline_cache_is_one_clear_error(offline_hub, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="org/missing: no such folder, and not a Hugging Face Hub repo id"):
        Localizer.from_pretrained("org/missing", device="cpu")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        PersonDetector.from_pretrained("not a/valid//id")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), IMAGE)
    assert main(["predict", str(image), "--checkpoint", "org/tiny-locllm", "--detector", "org/missing"]) == 1
    assert "locllm predict: error: org/missing: no such folder" in capsys.readouterr().err


def test_an_existing_folder_never_asks_the_hub(char_checkpoint, monkeypatch):
    monkeypatch.setattr("locllm.models.hub.snapshot_download", lambda *a, **k: pytest.fail("asked the Hub"))
    assert resolve_pretrained(char_checkpoint) == char_checkpoint
    assert resolve_pretrained(str(char_checkpoint)) == char_checkpoint


def test_the_hub_keywords_of_transformers_pick_a_repo_ids_files(offline_hub, char_checkpoint, tmp_path):
    """cache_dir, local_files_only, revision, subfolder (and token, proxies, force_download at their defaults)
    mean what they mean in transformers, for the Auto classes, the model class and the Localizer alike."""
    elsewhere = tmp_path / "elsewhere"
    populate_hub_cache(elsewhere, "org/collection", char_checkpoint, subfolder="locllm")
    hub = {"cache_dir": elsewhere, "local_files_only": True, "revision": REVISION, "subfolder": "locllm",
           "token": None, "proxies": None, "force_download": False}
    expected = LocLLMForKeypointLocalization.from_pretrained(char_checkpoint).state_dict()
    for model in (AutoModel.from_pretrained("org/collection", **hub),
                  LocLLMForKeypointLocalization.from_pretrained("org/collection", **hub),
                  Localizer.from_pretrained("org/collection", device="cpu", **hub).model):
        assert type(model) is LocLLMForKeypointLocalization
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="org/collection: no such folder"):  # not in the default cache
        Localizer.from_pretrained("org/collection", device="cpu", subfolder="locllm")
    with pytest.raises(FileNotFoundError, match="no subfolder 'other'"):
        Localizer.from_pretrained("org/collection", device="cpu", **{**hub, "subfolder": "other"})
    with pytest.raises(FileNotFoundError, match="org/collection: no such folder"):  # a revision not in the cache
        LocLLMForKeypointLocalization.from_pretrained("org/collection", **{**hub, "revision": "f" * 40})
