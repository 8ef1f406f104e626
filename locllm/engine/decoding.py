"""Decoding: from a person's image features and keypoint queries to answer tokens and scores.

Two paths that give the same greedy answers:

- ``reference_decode``: what the reference implementation does. One full prompt per keypoint, each
  with its own copy of the image, left-padded into one batch and run through Hugging Face
  ``generate``; the model re-encodes the images at every decoding step. Kept as the parity baseline.
- ``fast_decode``: each crop is encoded once (the caller passes features); the shared image prefix is
  prefilled once per person and its KV cache serves all of that person's keypoint queries (copied
  once into each query's row of a cache allocated for the whole answer); the queries of many persons
  run as one batch. With a grammar, structural tokens are forced (several
  per forward where they follow each other) and only the value tokens (digits) are chosen, so every
  answer parses; without one it is plain greedy decoding, token for token the reference's.

Scores follow the reference's definition (mean, over the tokens of each written value, of the
probability of the emitted token), computed over token spans rather than character positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache


@dataclass(frozen=True)
class GrammarItem:
    """One token of an answer: ``allowed`` token ids (one id = forced) and which value it writes
    (0 = x, 1 = y, 2 = depth; ``None`` for brackets, separators and EOS)."""

    allowed: tuple[int, ...]
    value_index: int | None

    @property
    def forced(self) -> bool:
        return len(self.allowed) == 1


@dataclass(frozen=True)
class AnswerGrammar:
    """The token sequence every answer follows, e.g. ``▁[ 0 . d d d , 0 . d d d ] </s>`` for Llama."""

    items: tuple[GrammarItem, ...]
    num_values: int

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class DecodedAnswers:
    """Per query: generated token ids (EOS excluded), per-value scores (Q, num_values), NaN where a
    value was not written."""

    token_ids: list[list[int]]
    value_scores: torch.Tensor


@torch.no_grad()
def reference_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                     max_new_tokens: int, eos_token_id: int, pad_token_id: int,
                     suppress_token_ids: tuple[int, ...] = ()) -> tuple[list[list[int]], torch.Tensor]:
    """Hugging Face ``generate`` on full left-padded prompts, images passed (and re-encoded) every step.

    ``suppress_token_ids``: tokens never generated (the image token: an answer cannot hold one).

    Returns per row the generated ids (up to, not including, EOS) and the (rows, steps) max softmax
    probability at each step, which the caller turns into scores the way the reference does.
    """
    def pass_images_every_step(module, args, kwargs):
        # generate (transformers >= 5) hands pixel_values to the prefill only; the reference's generate
        # passed them at every step and its forward re-encoded them each time, the cost this mode measures.
        if kwargs.get("pixel_values") is None:
            kwargs["pixel_values"] = pixel_values
        return args, kwargs

    hook = model.register_forward_pre_hook(pass_images_every_step, with_kwargs=True)
    try:
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, suppress_tokens=list(suppress_token_ids) or None,
            output_scores=True, return_dict_in_generate=True,
        )
    finally:
        hook.remove()
    new_tokens = out.sequences[:, input_ids.shape[1]:]
    step_probs = torch.stack([s.float().softmax(-1).max(-1).values for s in out.scores], dim=1)
    token_ids = []
    for row in new_tokens.tolist():
        token_ids.append(row[: row.index(eos_token_id)] if eos_token_id in row else row)
    return token_ids, step_probs


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
    return ids, mask


class _SharedPrefixBatch:
    """The running state of a batch of queries that continue a cached prefix.

    Row q holds ``prefix | left padding | query | generated`` in a cache allocated once for the whole
    answer: the prefix KV of the row's person is copied in once and every new token is written in
    place. Growing the cache by concatenation instead copied all of it at every step (a quarter of
    the fast path's time on CPU). Positions skip the padding, so every row is numbered exactly as its
    own unpadded prompt would be; the 4D mask lets each token see its row's written slots up to itself.
    """

    def __init__(self, model, prefix_cache: DynamicCache, person_index: list[int], prefix_len: int, capacity: int):
        device = prefix_cache.layers[0].keys.device
        rows = len(person_index)
        self.model = model
        self.cache = StaticCache(config=model.config.text_config, max_cache_len=capacity)
        index = torch.tensor(person_index, device=device)
        for layer_idx, layer in enumerate(prefix_cache.layers):
            self.cache.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), layer_idx)
        self.written = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.written[:, :prefix_len] = True
        self.length = prefix_len
        self.next_position = torch.full((rows,), prefix_len, dtype=torch.long, device=device)
        self.additive_mask = model.config.text_config._attn_implementation == "eager"

    def feed(self, ids: torch.Tensor, mask: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """Run (Q, t) new tokens (mask 0 = padding) and return the logits of the last ``keep`` (default
        all t) positions, (Q, keep, V): the LM head over a whole query would dominate small models."""
        t = ids.shape[1]
        slots = torch.arange(self.length, self.length + t, device=ids.device)
        self.written[:, slots] = mask.bool()
        causal = torch.arange(self.written.shape[1], device=ids.device)[None, :] <= slots[:, None]  # (t, C)
        attend = (self.written[:, None, :] & causal[None])[:, None]  # (Q, 1, t, C)
        if self.additive_mask:
            attend = torch.zeros(attend.shape, device=ids.device).masked_fill(~attend, torch.finfo(torch.float32).min)
        position_ids = self.next_position[:, None] + (mask.cumsum(dim=1) - 1).clamp(min=0)
        self.next_position = self.next_position + mask.sum(dim=1)
        self.length += t
        out = self.model(input_ids=ids, attention_mask=attend, position_ids=position_ids,
                         cache=self.cache, use_cache=True, logits_to_keep=keep or t)
        return out.logits.float()


@torch.no_grad()
def prefill_prefix(model, prefix_ids: list[int], image_features: torch.Tensor) -> DynamicCache:
    """Run the shared prefix (BOS, "Image: ", image tokens ...) once per person: (P, N, D) features."""
    persons = image_features.shape[0]
    ids = torch.tensor([prefix_ids] * persons, device=image_features.device)
    cache = DynamicCache(config=model.config.text_config)
    model(input_ids=ids, image_features=image_features, cache=cache, use_cache=True, logits_to_keep=1)
    return cache


@torch.no_grad()
def fast_decode(model, image_features: torch.Tensor, prefix_ids: list[int], person_index: list[int],
                query_ids: list[list[int]], grammar: AnswerGrammar | None, eos_token_id: int,
                pad_token_id: int, max_new_tokens: int, suppress_token_ids: tuple[int, ...] = ()) -> DecodedAnswers:
    """Answer ``len(query_ids)`` keypoint queries; query q asks about person ``person_index[q]`` whose
    features are ``image_features[person_index[q]]`` (P, N, D).

    With ``grammar`` the answers follow it (structural tokens forced); with ``None`` it is plain greedy
    decoding up to EOS or ``max_new_tokens``, never emitting ``suppress_token_ids`` (then
    ``value_scores`` holds per-step probabilities, not split by value: the caller parses the text).
    """
    device = image_features.device
    # Tokens every query starts with ("Keypoint: The") are the same for all of a person's queries: they
    # join the prefix, prefilled once per person. Each query keeps one token to feed.
    shared = _common_prefix_length(query_ids, limit=min(len(q) for q in query_ids) - 1)
    prefix_ids = prefix_ids + query_ids[0][:shared]
    query_ids = [q[shared:] for q in query_ids]
    prefix_cache = prefill_prefix(model, prefix_ids, image_features)
    rows = len(query_ids)
    longest_query = max(len(q) for q in query_ids)
    if grammar is None:
        batch = _SharedPrefixBatch(model, prefix_cache, person_index, len(prefix_ids),
                                   len(prefix_ids) + longest_query + max_new_tokens)
        return _greedy(batch, query_ids, eos_token_id, pad_token_id, max_new_tokens, device, suppress_token_ids)

    # Forced tokens at the start of the answer join the query pass: "Answer:" + "▁[0." in one go.
    items = grammar.items
    first_choice = next((i for i, item in enumerate(items) if not item.forced), len(items))
    lead = [item.allowed[0] for item in items[:first_choice]]
    batch = _SharedPrefixBatch(model, prefix_cache, person_index, len(prefix_ids),
                               len(prefix_ids) + longest_query + len(items))
    ids, mask = left_pad([q + lead for q in query_ids], pad_token_id)
    logits = batch.feed(ids.to(device), mask.to(device), keep=len(lead) + 1)
    # logits[:, k] predicts items[k] for k < len(lead); the last position predicts the first choice.
    emitted = _Emitted(rows, device)
    for k, item in enumerate(items[:first_choice]):
        emitted.force(item, logits[:, k])
    next_logits = logits[:, -1]

    i = first_choice
    while i < len(items):
        chosen = emitted.choose(items[i], next_logits)
        # Feed the choice together with the forced tokens that follow it, up to the next choice.
        j = i + 1
        while j < len(items) and items[j].forced:
            j += 1
        if j == len(items):
            # Only closing tokens remain ("]", EOS): nothing later needs their logits.
            for tail in items[i + 1:]:
                if tail.allowed[0] != eos_token_id:
                    emitted.append(tail)
            break
        run = torch.tensor([it.allowed[0] for it in items[i + 1:j]], dtype=torch.long, device=device)
        step_ids = torch.cat([chosen[:, None], run.expand(rows, len(run))], dim=1)
        logits = batch.feed(step_ids, torch.ones_like(step_ids))
        for k, item in enumerate(items[i + 1:j]):
            emitted.force(item, logits[:, k])
        next_logits = logits[:, -1]
        i = j
    return emitted.answers(grammar.num_values)


def _common_prefix_length(sequences: list[list[int]], limit: int) -> int:
    length = 0
    while length < limit and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


class _Emitted:
    """The tokens written so far for every query, with the probability the model gave each and the
    value it belongs to; kept as (Q,) columns so no step loops over queries in Python."""

    def __init__(self, rows: int, device: torch.device):
        self.rows, self.device = rows, device
        self.tokens: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []
        self.values: list[int | None] = []

    def force(self, item: GrammarItem, logits: torch.Tensor) -> None:
        token = torch.full((self.rows,), item.allowed[0], dtype=torch.long, device=self.device)
        self._add(token, logits.softmax(-1)[:, item.allowed[0]], item.value_index)

    def choose(self, item: GrammarItem, logits: torch.Tensor) -> torch.Tensor:
        allowed = torch.tensor(item.allowed, device=self.device)
        token = allowed[logits[:, allowed].argmax(dim=-1)]
        self._add(token, logits.softmax(-1).gather(1, token[:, None])[:, 0], item.value_index)
        return token

    def append(self, item: GrammarItem) -> None:
        """A closing token nobody needs the probability of."""
        self.tokens.append(torch.full((self.rows,), item.allowed[0], dtype=torch.long, device=self.device))

    def _add(self, token: torch.Tensor, prob: torch.Tensor, value_index: int | None) -> None:
        self.tokens.append(token)
        self.probs.append(prob)
        self.values.append(value_index)

    def answers(self, num_values: int) -> DecodedAnswers:
        probs = torch.stack(self.probs, dim=1).cpu()
        scores = torch.full((self.rows, num_values), float("nan"))
        for v in range(num_values):
            columns = [c for c, value in enumerate(self.values) if value == v]
            if columns:
                scores[:, v] = probs[:, columns].mean(dim=1)
        return DecodedAnswers(torch.stack(self.tokens, dim=1).tolist(), scores)


def _greedy(batch: _SharedPrefixBatch, query_ids, eos_token_id, pad_token_id, max_new_tokens, device,
            suppress_token_ids):
    rows = len(query_ids)
    ids, mask = left_pad(query_ids, pad_token_id)
    logits = batch.feed(ids.to(device), mask.to(device), keep=1)[:, -1]
    suppressed = torch.tensor(list(suppress_token_ids), dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    step_probs: list[list[float]] = [[] for _ in range(rows)]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits[:, suppressed] = float("-inf")
        probs = logits.softmax(-1)
        best_prob, best = probs.max(dim=-1)
        for q in range(rows):
            if not done[q] and int(best[q]) != eos_token_id:
                tokens[q].append(int(best[q]))
                step_probs[q].append(float(best_prob[q]))
        done |= best == eos_token_id
        if bool(done.all()):
            break
        # Finished rows keep feeding EOS (masked out) so the batch stays rectangular, as in generate.
        step = torch.where(done, torch.full_like(best, pad_token_id), best)[:, None]
        logits = batch.feed(step, (~done).long()[:, None])[:, -1]
    width = max(1, max(len(p) for p in step_probs))
    scores = torch.full((rows, width), float("nan"))
    for q, p in enumerate(step_probs):
        scores[q, : len(p)] = torch.tensor(p)
    return DecodedAnswers(tokens, scores)
