"""``TextAnswerer``: how a LocLLM model answers: it writes each keypoint's coordinates as text.

    crops (P, 3, S, S) -> image features, once per crop -> one query per keypoint, prefix shared
        (``fast``) or K full prompts per person (``reference``) -> answer text -> coordinates (codec)

A keypoint's score is the mean of its x and y scores, each the mean probability of the tokens that
wrote the value, as in the reference. Fast mode can read more from the digit distributions (sub-digit
coordinates, the flip test, calibrated scores: :class:`~.refinement.DecodingOptions`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..codecs.reading import keypoint_confidence
from ..keypoints import KeypointSet
from ..models.calibration import Calibration
from ..models.processing_locllm import LocLLMProcessor
from .decoding import DecodedAnswers, fast_decode, reference_decode
from .refinement import DecodingOptions, first_value_steps, fuse_flipped, value_steps


class TextAnswerer:
    """Answers by decoding text: ``fast`` (grammar-constrained, prefix shared) or ``reference``.

    Args:
        constrained: follow the answer grammar in ``fast`` mode. Unconstrained fast decoding is plain
            greedy, token for token the reference's: for parity checks on models (random ones) whose
            answers do not follow the grammar.
        options: how fast mode reads the answers (default: the paper's reading); reference mode ignores them.
        calibration: the checkpoint's confidence calibration (needed by ``score="calibrated"``).
    """

    def __init__(self, constrained: bool = True, options: DecodingOptions | None = None,
                 calibration: Calibration | None = None):
        self.constrained = constrained
        self.options = options or DecodingOptions()
        self.calibration = calibration

    @torch.no_grad()
    def __call__(self, model, processor: LocLLMProcessor, pixel_values: torch.Tensor, kp_set: KeypointSet,
                 mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Normalized crop tensors (P, 3, S, S) on the model's device -> per person: coordinates (P, K, ndim)
        in [0, 1) of the crop (depth in mm), NaN where invalid; scores (P, K); valid (P, K); answer texts
        (P lists of K)."""
        processor.check_image_token(model.config.image_token_id)
        # The image token may be inside the LM's vocabulary; an answer never holds one, and feeding one
        # back would read as a second image.
        vocab = model.get_input_embeddings().num_embeddings
        suppressed = (processor.image_token_id,) if processor.image_token_id < vocab else ()
        prefix, queries = processor.prompt_ids(kp_set)
        persons, k = pixel_values.shape[0], len(kp_set)
        max_new_tokens = len(processor.grammar) - 1
        if mode == "fast":
            features: dict[int, torch.Tensor] = {}  # by crop batch (original, mirrored): each encoded once

            def ask(pixels: torch.Tensor, asked: list[list[int]], runner_up_steps=frozenset()) -> DecodedAnswers:
                if id(pixels) not in features:
                    features[id(pixels)] = model.get_image_features(pixels)
                return fast_decode(model, features[id(pixels)], prefix, asked,
                                   processor.grammar if self.constrained else None, processor.eos_token_id,
                                   max_new_tokens, suppressed, runner_up_steps)

            decoded = ask(pixel_values, queries)
            token_ids, value_scores = decoded.token_ids, decoded.value_scores.numpy()
        else:
            token_ids, value_scores = self._reference_answers(model, processor, pixel_values, prefix, queries,
                                                              suppressed)
        texts, normalized, valid = processor.decode_answers(token_ids)
        keypoint_scores = np.where(valid, np.nan_to_num(value_scores[:, :2], nan=0.0).mean(axis=1), 0.0)
        if mode == "fast" and not self.options.is_paper:  # reference mode is always the paper's reading
            normalized, keypoint_scores = self._read(processor, ask, pixel_values, queries, kp_set, decoded,
                                                     normalized, keypoint_scores)
        return (normalized.reshape(persons, k, -1), keypoint_scores.reshape(persons, k), valid.reshape(persons, k),
                [texts[p * k:(p + 1) * k] for p in range(persons)])

    def _read(self, processor: LocLLMProcessor, ask, pixel_values: torch.Tensor, queries: list[list[int]],
              kp_set: KeypointSet, decoded: DecodedAnswers, greedy: np.ndarray,
              scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (Q, ndim) and keypoint scores (Q,) by ``self.options``, from the answers ``decoded``
        (whose greedy reading is ``greedy`` and reference scores ``scores``); ``ask(pixels, queries,
        runner_up_steps)`` decodes more (the flip test, the beam's other branch)."""
        options, ndim = self.options, processor.ndim

        def coordinates(answers: DecodedAnswers, steps, pixels: torch.Tensor, asked: list[list[int]]) -> np.ndarray:
            if options.decode == "greedy":
                return processor.decode_answers(answers.token_ids)[1]
            if options.decode == "beam":
                runner_up = ask(pixels, asked, first_value_steps(answers))
                return processor.beam_coordinates(steps, value_steps(runner_up, ndim))
            return processor.subdigit_coordinates(steps)

        steps = value_steps(decoded, ndim)
        coords = greedy if options.decode == "greedy" else coordinates(decoded, steps, pixel_values, queries)
        confidence = keypoint_confidence(steps)
        if options.flip:
            # Each keypoint's flip partner asked on the mirrored crop (a midline keypoint is its own partner).
            mirrored, partners = pixel_values.flip(-1), [queries[i] for i in kp_set.flip_indices()]
            flipped = ask(mirrored, partners)
            flipped_steps = value_steps(flipped, ndim)
            flipped_confidence = keypoint_confidence(flipped_steps)
            coords = fuse_flipped(coords, confidence, coordinates(flipped, flipped_steps, mirrored, partners),
                                  flipped_confidence, pixel_values.shape[-1])
            scores = (scores + np.nanmean(flipped.value_scores.numpy()[:, :2], axis=1)) / 2
            confidence = (confidence + flipped_confidence) / 2
        if options.score == "calibrated":
            if self.calibration is None:
                raise ValueError("score='calibrated' needs the checkpoint's calibration.json; fit one with "
                                 "`locllm calibrate CHECKPOINT --data SCENES`")
            scores = self.calibration(confidence)
        return coords, scores

    @staticmethod
    def _reference_answers(model, processor: LocLLMProcessor, pixel_values: torch.Tensor, prefix: list[int],
                           queries: list[list[int]], suppressed: tuple[int, ...]) -> tuple[list[list[int]], np.ndarray]:
        """The reference's way: per person, K full prompts with K copies of the image, one generate call."""
        input_ids, attention_mask = processor.pad([prefix + q for q in queries], side="left")
        token_ids: list[list[int]] = []
        scores = []
        for p in range(pixel_values.shape[0]):
            images = pixel_values[p:p + 1].expand(len(queries), -1, -1, -1)
            ids, step_probs = reference_decode(
                model, input_ids.to(pixel_values.device), attention_mask.to(pixel_values.device), images,
                len(processor.grammar) - 1, processor.eos_token_id, processor.pad_token_id, suppressed,
            )
            token_ids += ids
            scores.append(processor.value_scores(ids, step_probs))
        return token_ids, np.concatenate(scores)


__all__ = ["TextAnswerer"]
