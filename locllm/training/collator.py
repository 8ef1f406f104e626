"""Samples -> model inputs: the normalized crops, and each sample's conversation as ids and labels.

A keypoint sample (:class:`PoseSample`) becomes one multi-round conversation: up to ``max_rounds``
keypoints chosen at random among its visible ones, each asked and answered in turn (paper Table 1).
A caption sample (:class:`CaptionSample`, stage 1) becomes the image followed by its caption, as in
LLaVA's pretraining: only the caption and EOS are supervised.

The random choice of keypoints is seeded by (seed, epoch, dataset index), like the datasets'
augmentations, so a batch is the same whichever process or worker builds it, and a resumed run
sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..data.datasets import CaptionSample, PoseSample
from ..models.processing_locllm import LocLLMProcessor
from ..prompts import IGNORE_INDEX
from ..prompts.grammar import AnswerChoices
from ..prompts.padding import pad_sequences
from .first_decimal import NOT_A_FIRST_DECIMAL, FirstDecimalMonitor

ROUND_CHOICE_STREAM = 1  # keeps the round choice independent of the datasets' augmentation draws


class TrainingCollator:
    """Build a training batch from ``(epoch, index, sample)`` items (what the trainer's loader yields).

    Args:
        processor: the model's ``pixel_values``, conversation ids and labels (``training_example``,
            ``caption_example``; its ``ndim`` decides 2D or 3D answers) and padding (``input_ids`` are
            right-padded with its pad id, labels with ``IGNORE_INDEX``).
        max_rounds: keypoints asked per sample (the paper: 5).
        seed: with epoch and index, seeds each sample's choice of keypoints.
        supervise_unknown_depth: 3D only: also supervise the filler depth of samples without depth
            (the reference does; by default those characters carry no loss).
        answer_choices: for the answer-vocabulary loss (``optim.loss: answer_vocab``): where the
            constrained decoder chooses; ``None``: the paper's loss over the whole vocabulary.
        first_decimal: ``logging.first_decimal``: marks the first decimal of each answered coordinate.

    Returns (from ``__call__``):
        ``pixel_values`` (B, 3, S, S) float32, ``input_ids`` / ``labels`` / ``attention_mask`` (B, T); with
        ``answer_choices`` also ``answer_choice_ids`` (C,) and ``answer_choice_mask`` (B, T - 1), true where
        position t predicts a chosen token (label t + 1); with ``first_decimal`` also ``first_decimal_group``
        (B, T - 1), :meth:`FirstDecimalMonitor.groups` of each row.
    """

    def __init__(
        self,
        processor: LocLLMProcessor,
        max_rounds: int = 5,
        seed: int = 0,
        supervise_unknown_depth: bool = False,
        answer_choices: AnswerChoices | None = None,
        first_decimal: FirstDecimalMonitor | None = None,
    ):
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.processor = processor
        self.max_rounds = max_rounds
        self.seed = seed
        self.supervise_unknown_depth = supervise_unknown_depth
        self.answer_choices = answer_choices
        self.first_decimal = first_decimal

    def __call__(self, items: Sequence[tuple[int, int, PoseSample | CaptionSample]]) -> dict[str, torch.Tensor]:
        examples, crops = [], []
        for epoch, index, sample in items:
            if isinstance(sample, CaptionSample):
                # the sample's instruction is left out: stage 1 only aligns image features with text
                examples.append(self.processor.caption_example(sample.caption))
            else:
                rng = np.random.default_rng([self.seed, epoch, index, ROUND_CHOICE_STREAM])
                examples.append(self.keypoint_example(sample, rng))
            crops.append(sample.image)
        pixel_values = self.processor.pixel_values(crops)
        batch = self.pad(examples)
        batch["pixel_values"] = pixel_values
        if self.answer_choices is not None:
            choice_ids = torch.tensor(self.answer_choices.choice_ids)
            after_ids = torch.tensor(self.answer_choices.after_ids)
            batch["answer_choice_ids"] = choice_ids
            batch["answer_choice_mask"] = (torch.isin(batch["labels"][:, 1:], choice_ids)
                                           & torch.isin(batch["input_ids"][:, :-1], after_ids))
        if self.first_decimal is not None:
            groups = torch.full((len(examples), batch["labels"].shape[1] - 1), NOT_A_FIRST_DECIMAL)
            for row, example in enumerate(examples):  # a caption example has none
                found = example.get("first_decimal_group", [])
                groups[row, :len(found)] = torch.tensor(found, dtype=torch.long)
            batch["first_decimal_group"] = groups
        return batch

    def keypoint_example(self, sample: PoseSample, rng: np.random.Generator) -> dict[str, list[int]]:
        """Up to ``max_rounds`` random visible keypoints of the sample, as one conversation."""
        candidates = np.flatnonzero(sample.visible)
        if len(candidates) == 0:
            raise ValueError(f"sample {sample.image_id} has no visible keypoint to ask; training datasets skip such crops")
        chosen = rng.choice(candidates, size=min(self.max_rounds, len(candidates)), replace=False)
        width, height = sample.crop_size
        supervise_depth = True if self.supervise_unknown_depth else None  # None: iff the depth is known
        rounds = []
        for k in chosen:
            x, y, depth = (float(v) for v in sample.joints[k])
            coords = [x / width, y / height]
            if self.processor.ndim == 3:
                coords.append(depth if sample.has_depth else math.nan)  # NaN: the codec writes its filler
            rounds.append((sample.keypoints[k], coords))
        example = self.processor.training_example(rounds, supervise_depth)
        if self.first_decimal is not None:
            example["first_decimal_group"] = self.first_decimal.groups(
                example["input_ids"], example["labels"], [keypoint.name for keypoint, _ in rounds])
        return example

    def pad(self, examples: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest example: ids with the pad id, labels with ``IGNORE_INDEX``."""
        input_ids, attention_mask = self.processor.pad([example["input_ids"] for example in examples])
        labels, _ = pad_sequences([example["labels"] for example in examples], IGNORE_INDEX)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
