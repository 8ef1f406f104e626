"""Is the model reading the picture yet? The loss of each coordinate's first decimal next to an image-blind answer.

Early in training a LocLLM's loss falls while it learns the answer grammar and where each keypoint usually
is, the mean pose, without looking at the image; the total loss cannot tell that from learning to see.
The first decimal of a coordinate (the ``4`` of ``0.412``) is the token where the picture must show: a
model that knows the keypoint and the axis but not the image can do no better on it than the digit
frequencies of that (keypoint, axis). ``logging.first_decimal: true`` logs, every ``logging.every_steps``
steps, the model's mean cross-entropy on those tokens next to that image-blind value: the add-one-smoothed
frequencies of the answers this process trained on before each micro-batch, scored on its answers. The gap
is what the model reads from the images (in nats per first decimal).

Decimal answers only (a location-token answer has no decimal point). The model's figure is read from the
training step's own logits: under the answer-vocabulary loss it is a softmax over the digits, under the
paper's loss over the whole vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..models.modeling_locllm import loss_targets
from ..prompts import IGNORE_INDEX

NOT_A_FIRST_DECIMAL = -1


class FirstDecimalMonitor:
    """Finds the first-decimal tokens of training examples (in the collator) and accumulates both losses
    (in the training loop).

    Args:
        unit_ids: the prompt builder's ``unit_token_ids()`` (the digits' and the decimal point's ids).
        eos_token_id: the token that closes each round's answer.
        keypoint_names: the keypoints trained on; each (keypoint, axis) keeps its own digit counts.
        ndim: coordinates per answer (2 or 3).
    """

    def __init__(self, unit_ids: dict[str, int], eos_token_id: int, keypoint_names: Sequence[str], ndim: int):
        self.point_id, self.eos_token_id = unit_ids["."], eos_token_id
        self.digit_ids = torch.tensor([unit_ids[d] for d in "0123456789"])
        self._digit_set = set(self.digit_ids.tolist())  # what groups() asks once per token
        self.keypoint_ids = {name: i for i, name in enumerate(keypoint_names)}
        self.ndim = ndim
        self.counts = torch.zeros(len(keypoint_names) * ndim, 10)
        self._sums = [0.0, 0.0, 0]  # model nats, image-blind nats, tokens since the last report

    def groups(self, input_ids: Sequence[int], labels: Sequence[int], asked: Sequence[str]) -> list[int]:
        """For one example whose rounds ask ``asked`` in turn: (T - 1) entries, at position t the group
        (keypoint index x ndim + axis) whose first decimal label t + 1 is, else ``NOT_A_FIRST_DECIMAL``. A
        round ends at its EOS label; the axes are its supervised decimal points in turn (a 3D answer's
        unsupervised depth is not counted)."""
        found = [NOT_A_FIRST_DECIMAL] * (len(input_ids) - 1)
        round_index, axis = 0, 0
        for t in range(len(input_ids) - 1):
            if labels[t + 1] == self.eos_token_id:
                round_index, axis = round_index + 1, 0
            elif input_ids[t] == self.point_id and labels[t] != IGNORE_INDEX and round_index < len(asked):
                keypoint = self.keypoint_ids.get(asked[round_index])
                if keypoint is not None and axis < self.ndim and labels[t + 1] in self._digit_set:
                    found[t] = keypoint * self.ndim + axis
                axis += 1
        return found

    def record(self, groups: torch.Tensor, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> None:
        """One micro-batch: ``groups`` (B, T - 1) from :meth:`groups`, ``logits`` the training loss's (one row
        per position it supervised, in row-major order: the whole vocabulary, or the answer choices
        ``batch["answer_choice_ids"]`` at ``batch["answer_choice_mask"]``), whose columns are read by the
        loss's own rule (:func:`~locllm.models.modeling_locllm.loss_targets`)."""
        targets = batch["labels"][:, 1:]
        supervised, columns = loss_targets(targets, batch.get("answer_choice_ids"), batch.get("answer_choice_mask"))
        rows = groups[supervised]
        counted = rows != NOT_A_FIRST_DECIMAL
        if not counted.any():
            return
        model_nats = torch.nn.functional.cross_entropy(logits[counted].float(), columns[counted], reduction="sum")
        rows = rows[counted].cpu()
        truth = (targets[supervised][counted].cpu()[:, None] == self.digit_ids).int().argmax(dim=1)
        blind = (self.counts[rows, truth] + 1) / (self.counts[rows].sum(dim=1) + 10)
        self._sums[0] += model_nats.item()
        self._sums[1] -= blind.log().sum().item()
        self._sums[2] += len(rows)
        self.counts.index_put_((rows, truth), torch.ones(len(rows)), accumulate=True)

    def report(self) -> dict[str, float]:
        """Mean nats per first decimal since the last report (NaN when none was trained on), then reset."""
        model_nats, blind_nats, tokens = self._sums
        self._sums = [0.0, 0.0, 0]
        if not tokens:
            return {"first_decimal_loss": math.nan, "first_decimal_loss_image_blind": math.nan}
        return {"first_decimal_loss": model_nats / tokens, "first_decimal_loss_image_blind": blind_nats / tokens}
