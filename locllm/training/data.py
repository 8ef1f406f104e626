"""The training data: the config's dataset mixture, and each process's share of every global batch.

The data order is a permutation seeded by (seed, epoch), cut into global batches, each cut into one
contiguous share per process and a share into micro-batches; with the datasets' and the collator's
per-sample seeds (keyed by ``(epoch, index)``), a batch is the same whichever process builds it, and a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import (
    CaptionDataset,
    CocoKeypointDataset,
    Human36MDataset,
    MixtureDataset,
    MpiiDataset,
    PoseDataset,
)
from ..data.synth.demo import SynthPoseDemoDataset
from ..keypoints import load_keypoint_table
from .config import TrainConfig

DATASET_TYPES = {"coco": CocoKeypointDataset, "mpii": MpiiDataset, "h36m": Human36MDataset, "captions": CaptionDataset,
                 "synthpose_demo": SynthPoseDemoDataset}
SAMPLER_STREAM = 2  # keeps the data order independent of the other seeded draws


def build_dataset(config: TrainConfig, crop_size: int) -> MixtureDataset:
    """The mixture of the config's datasets, in training mode. A dataset's ``keypoints``, when given, is the
    path of a keypoint table (:func:`~locllm.keypoints.load_keypoint_table`): its own keypoints, in the order
    of its annotations (with ``keypoint_field`` for a COCO file that keeps them under another key)."""
    parts = []
    for i, spec in enumerate(config.data.datasets):
        if spec.type not in DATASET_TYPES:
            raise ValueError(f"data.datasets.{i}.type {spec.type!r} is unknown; known: {', '.join(DATASET_TYPES)}")
        if spec.type == "captions":
            managed = {"image_size": crop_size}
        else:
            managed = {"train": True, "crop_size": crop_size, "augmentation": config.data.augmentation,
                       "exclude_keypoints": config.data.exclude_keypoints, "seed": config.seed}
        clash = sorted(set(spec.args) & set(managed))
        if clash:
            raise ValueError(f"data.datasets.{i}: {clash} are set by the trainer (data.crop_size, data.augmentation, ...)")
        args = dict(spec.args)
        if "keypoints" in args:
            args["keypoints"] = load_keypoint_table(args["keypoints"])
        try:
            parts.append(DATASET_TYPES[spec.type](**args, **managed))
        except TypeError as error:
            raise ValueError(f"data.datasets.{i} ({spec.type}): {error}") from None
        except (ValueError, KeyError, AssertionError) as error:  # a malformed file (pycocotools asserts its layout)
            source = spec.args.get("annotation_file", "its annotation file")
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"data.datasets.{i} ({spec.type}): {source} cannot be read ({detail}); fix the file "
                             "or point annotation_file at a file of that dataset type") from None
    return MixtureDataset(parts, [spec.repeat for spec in config.data.datasets], seed=config.seed)


def trained_descriptions(dataset: MixtureDataset) -> dict[str, str]:
    """Every keypoint the datasets ask about, with the description its prompts give: the checkpoint's
    ``descriptions.json``, so that inference asks a keypoint by its name alone, in the words it was trained with."""
    descriptions: dict[str, str] = {}
    for part in dataset.datasets:
        if isinstance(part, (PoseDataset, SynthPoseDemoDataset)):
            for keypoint in part.keypoints:
                descriptions.setdefault(keypoint.name, keypoint.description)
    return descriptions


class EpochItems(Dataset):
    """Keys ``(epoch, index)`` -> ``(epoch, index, sample)``: the collator seeds its choices with them."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        return epoch, index, self.dataset[index]


def epoch_micro_batches(num_samples: int, batch_size: int, micro_batch_size: int, seed: int, epoch: int,
                        rank: int, world_size: int, first_step: int = 0) -> list[list[tuple[int, int]]]:
    """This process's micro-batches of ``(epoch, index)`` keys, from optimizer step ``first_step`` of the epoch.

    The epoch is a permutation seeded by (seed, epoch) cut into global batches (an incomplete last one
    is dropped); each global batch is cut into ``world_size`` contiguous shares, one per process, and a
    share into micro-batches.
    """
    order = np.random.default_rng([seed, SAMPLER_STREAM, epoch]).permutation(num_samples)
    steps = num_samples // batch_size
    share = batch_size // world_size
    batches = []
    for step in range(first_step, steps):
        mine = order[step * batch_size + rank * share: step * batch_size + (rank + 1) * share]
        for start in range(0, share, micro_batch_size):
            batches.append([(epoch, int(i)) for i in mine[start: start + micro_batch_size]])
    return batches


def epoch_loader(dataset: MixtureDataset, collator, config: TrainConfig, epoch: int, first_step: int, rank: int,
                 world_size: int, sampler_seed: int) -> DataLoader:
    """This process's micro-batches of ``epoch`` from optimizer step ``first_step``, collated."""
    dataset.set_epoch(epoch)  # before the loader copies the dataset into its workers
    return DataLoader(
        EpochItems(dataset),
        batch_sampler=epoch_micro_batches(len(dataset), config.optim.batch_size, config.optim.micro_batch_size,
                                          sampler_seed, epoch, rank, world_size, first_step),
        collate_fn=collator,
        num_workers=config.data.num_workers,
        # the loader's own generator, so creating it does not advance torch's global RNG
        generator=torch.Generator().manual_seed(config.seed + epoch),
    )
