"""The demo's SynthPose setting: one figure per scene, cut out by its box into a 64 px crop.

Scenes are rendered at a random size of 64-160 px (difficulty "normal" by default: any facing, rolls up
to 45 degrees, some figures cut by the border); the person is cut out by its box exactly as
:class:`~locllm.engine.Localizer` cuts it (top-down, box padded to a square, no enlargement). Keypoints:
the 17 COCO ones plus the neck and the pelvis (``DEMO_KEYPOINTS``); the pelvis is never trained and is
asked zero-shot. ``locllm train`` reads the crops as dataset type ``synthpose_demo``
(:class:`SynthPoseDemoDataset`). A demo checkpoint keeps its setting (difficulty, mean training pose) in ``SETTING_FILE``.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ...keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, KeypointSet
from ..datasets import PoseSample
from ..geometry import PIXEL_STD, box_to_center_scale, crop_image, image_to_crop
from .render import render_scene

CROP_SIZE = 64
RENDER_SIZES = (64, 160)  # scenes are rendered at a size drawn from this inclusive range
DEFAULT_DIFFICULTY = "normal"
SETTING_FILE = "synthpose_demo.json"
_EXTRA = [EXTRA_KEYPOINTS.index("neck"), EXTRA_KEYPOINTS.index("pelvis")]
DEMO_KEYPOINTS = KeypointSet("synthpose-demo", (*COCO_KEYPOINTS.keypoints, *(EXTRA_KEYPOINTS[i] for i in _EXTRA)),
                             COCO_KEYPOINTS.skeleton)
NOVEL_KEYPOINTS = ("pelvis",)  # never trained: asked zero-shot, by its description
TRAINED = np.array([name not in NOVEL_KEYPOINTS for name in DEMO_KEYPOINTS.names])


@dataclass
class PersonScene:
    """One rendered scene with one person, labelled in ``DEMO_KEYPOINTS`` order."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    box: np.ndarray  # (4,) x, y, w, h person box holding every labelled keypoint
    points: np.ndarray  # (K, 2) keypoint x, y in image pixels
    labelled: np.ndarray  # (K,) bool: v >= 1, i.e. inside the image (visible or occluded)


def render_person(seed: np.random.SeedSequence, difficulty: str = DEFAULT_DIFFICULTY) -> PersonScene:
    """The demo's SynthPose setting: one figure, rendered at a random size."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(RENDER_SIZES[0], RENDER_SIZES[1] + 1))
    image, (person,) = render_scene(rng, size=size, num_persons=1, difficulty=difficulty)
    joints = np.concatenate([person["keypoints"], person["extra_keypoints"][_EXTRA]])
    return PersonScene(image, person["bbox"], joints[:, :2], joints[:, 2] > 0)


def crop_geometry(box) -> tuple[np.ndarray, np.ndarray]:
    """Center and scale of a training crop of a person's box, as ``LocLLMImageProcessor.regions`` makes a
    person's region at inference (box scale factor 1, ``PIXEL_STD``)."""
    return box_to_center_scale(np.asarray(box, dtype=np.float64), 1.0, 1.0, PIXEL_STD)


@dataclass
class DemoCrops:
    """Person crops with their keypoints; arrays over M crops and the K ``DEMO_KEYPOINTS``."""

    crops: np.ndarray  # (M, S, S, 3) uint8
    points: np.ndarray  # (M, K, 2) float32 crop pixels
    labelled: np.ndarray  # (M, K) bool: v >= 1 in the scene
    inside: np.ndarray  # (M, K) bool: inside the crop, i.e. writable as coordinates in [0, 1)
    centers: np.ndarray  # (M, 2) float32 crop centres in scene pixels
    scales: np.ndarray  # (M, 2) float32 crop scales (units of PIXEL_STD)
    scene_sizes: np.ndarray  # (M,) side of each scene in pixels

    def __len__(self) -> int:
        return len(self.crops)


def _crop_person(seed: np.random.SeedSequence, difficulty: str) -> tuple:
    person = render_person(seed, difficulty)
    center, scale = crop_geometry(person.box)
    crop = crop_image(person.image, center, scale, 0.0, CROP_SIZE)
    points = image_to_crop(person.points, center, scale, CROP_SIZE)
    inside = ((points >= 0) & (points < CROP_SIZE)).all(axis=1)
    return crop, points.astype(np.float32), person.labelled, inside, center, scale, person.image.shape[0]


def make_crops(num_images: int, seed: int, difficulty: str = DEFAULT_DIFFICULTY, workers: int = 1,
               cache_dir: str | Path | None = None) -> DemoCrops:
    """Render ``num_images`` scenes (scene i from the i-th child of ``SeedSequence(seed)``) and crop them.

    ``workers`` > 1 renders in fresh ("spawn") processes; the crops are the same for any number.
    With ``cache_dir`` the crops are kept there as ``.npz`` and read back by later runs.
    """
    cache = Path(cache_dir) / f"synthpose-demo-{difficulty}-seed{seed}-{num_images}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return DemoCrops(**{name: stored[name] for name in stored.files})
    seeds = np.random.SeedSequence(seed).spawn(num_images)
    if workers > 1:
        # spawn, not fork: the parent's torch and OpenCV thread pools would be inherited broken
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            records = list(pool.map(_crop_person, seeds, [difficulty] * num_images,
                                    chunksize=max(1, min(256, num_images // (4 * workers)))))
    else:
        records = [_crop_person(s, difficulty) for s in seeds]
    fields = zip(*records, strict=True)
    data = DemoCrops(*(np.stack(values) for values in fields))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **vars(data))
    return data


def mean_pose(data: DemoCrops) -> np.ndarray:
    """(K, 2) every keypoint's mean position over the crops where it is labelled, as a fraction of the crop."""
    mask = (data.labelled & data.inside)[..., None]
    return (data.points * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1) / CROP_SIZE


def save_demo_setting(folder: Path, difficulty: str, pose: np.ndarray, num_crops: int) -> None:
    """What a held-out evaluation of the checkpoint needs: its SynthPose difficulty and the mean training pose."""
    payload = {
        "difficulty": difficulty,
        "render_sizes": list(RENDER_SIZES),
        "crop_size": CROP_SIZE,
        "mean_pose_about": f"mean training pose (x, y as fractions of the crop) over {num_crops} training crops: "
                           "the image-blind baseline's answer for every image",
        "mean_pose": {name: [round(float(v), 5) for v in xy] for name, xy in zip(DEMO_KEYPOINTS.names, pose, strict=True)},
    }
    (folder / SETTING_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def load_demo_setting(folder: str | Path) -> tuple[str, np.ndarray]:
    """The SynthPose difficulty and the (K, 2) mean training pose a demo checkpoint was saved with."""
    payload = json.loads((Path(folder) / SETTING_FILE).read_text())
    pose = np.array([payload["mean_pose"][name] for name in DEMO_KEYPOINTS.names], dtype=np.float64)
    return payload["difficulty"], pose


class SynthPoseDemoDataset(Dataset):
    """Dataset type ``synthpose_demo``: ``num_images`` rendered demo crops (cached) as :class:`PoseSample`.

    Scene i is rendered from the i-th child of ``SeedSequence(render_seed)``; ``workers`` > 1 renders in
    parallel, with the same crops. The crops are not augmented; every labelled keypoint inside the crop
    is askable but the never-trained ``NOVEL_KEYPOINTS`` and ``exclude_keypoints``. ``seed`` and ``train``
    (set by the trainer) change nothing: the samples are fixed crops.
    """

    def __init__(self, num_images: int, render_seed: int = 0, difficulty: str = DEFAULT_DIFFICULTY, workers: int = 1,
                 cache_dir: str | None = None, *, crop_size: int = CROP_SIZE, augmentation=None,
                 exclude_keypoints: list[str] = (), seed: int = 0, train: bool = True):
        if crop_size != CROP_SIZE:
            raise ValueError(f"the demo crops are {CROP_SIZE} px; got crop_size {crop_size}")
        if augmentation is not None and (augmentation.flip_prob or augmentation.scale_sigma or augmentation.rotation_prob):
            raise ValueError("the demo crops are not augmented: set data.augmentation's probabilities and sigma to 0")
        self.data = make_crops(num_images, render_seed, difficulty, workers, cache_dir)
        self.keypoints = DEMO_KEYPOINTS
        trained = TRAINED & np.array([name not in exclude_keypoints for name in DEMO_KEYPOINTS.names])
        self.askable = self.data.labelled & self.data.inside & trained[None]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> PoseSample:
        data = self.data
        joints = np.zeros((len(DEMO_KEYPOINTS), 3), dtype=np.float32)
        joints[:, :2] = data.points[index]
        size = int(data.scene_sizes[index])
        return PoseSample(
            image=data.crops[index], joints=joints, visible=self.askable[index], labelled=data.labelled[index],
            keypoints=DEMO_KEYPOINTS, has_depth=False, center=data.centers[index], scale=data.scales[index],
            rotation=0.0, pixel_std=PIXEL_STD, flipped=False, image_size=(size, size), image_id=index,
        )
