"""Decoding: from a person's image features and keypoint queries to answer tokens and scores.

Two paths that give the same greedy answers:

- ``reference_decode``: what the reference implementation does. One full prompt per keypoint, each
  with its own copy of the image, left-padded into one batch and run through Hugging Face
  ``generate``; the model re-encodes the images at every decoding step. Kept as the parity baseline.
- ``fast_decode``: each crop is encoded once (the caller passes features); one cache row per person
  holds the image prefix once and all of that person's keypoint queries after it, each query seeing
  only the prefix and itself, and many persons run as one batch. With a grammar, structural tokens are
  forced (several per forward where they follow each other) and only the value tokens (digits) are
  chosen, so every answer parses; without one it is plain greedy decoding, token for token the
  reference's.

Scores follow the reference's definition (mean, over the tokens of each written value, of the
probability of the emitted token), computed over token spans rather than character positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StaticCache

from ..prompts.grammar import AnswerGrammar, GrammarItem
from .shared_prefix_attention import SharedPrefixLayout, shared_prefix_attention


@dataclass
class DecodedAnswers:
    """Per query: generated token ids (EOS excluded), per-value scores (Q, num_values), NaN where a
    value was not written. Grammar-constrained decoding also keeps, at every chosen step, the
    distribution over that step's allowed tokens (``choice_probs``: one (Q, allowed) tensor per step, in
    order) and the value the step writes (``choice_values``): what sub-digit decoding and confidences
    read (:mod:`locllm.codecs.reading`, through :func:`.refinement.value_steps`)."""

    token_ids: list[list[int]]
    value_scores: torch.Tensor
    choice_probs: tuple[torch.Tensor, ...] = ()
    choice_values: tuple[int, ...] = ()


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


class _PackedPersons:
    """The running state of a batch of persons who are all asked the same K queries.

    Row p of one cache, allocated once for the whole answer, holds person p's image prefix, then the K
    queries one after another, then at every step each query's new tokens. The prefix KV is computed
    and stored once per person and read once per step by all K queries, instead of copied into K rows
    (Llama-2-7B in bf16, COCO's 17 queries: 0.65 GiB of cache per person instead of 2.8 GiB, and a
    quarter as much of it read at every decoding step). Each query sees the prefix and its own slots
    (:mod:`.shared_prefix_attention`), and positions continue each query's own numbering, so each
    query sees exactly the tokens and positions of its own unpadded prompt. The layout is the same in
    every row.
    """

    def __init__(self, model, persons: int, num_queries: int, capacity: int, own_capacity: int,
                 device: torch.device):
        self.model = model
        self.persons, self.num_queries, self.device = persons, num_queries, device
        self.cache = StaticCache(config=model.config.text_config, max_cache_len=capacity)
        self.length = 0  # slots written
        self.prefix_len = 0
        self.own_slots = torch.zeros(num_queries, own_capacity, dtype=torch.long, device=device)
        self.own_count = torch.zeros(num_queries, dtype=torch.long, device=device)
        self.next_position = torch.zeros(num_queries, dtype=torch.long, device=device)

    def start(self, prefix_ids: list[int], segments: list[list[int]], image_features: torch.Tensor,
              keep_last: int) -> torch.Tensor:
        """One pass over the prefix and all K query segments; returns the logits of each segment's last
        ``keep_last`` positions, (persons * K, keep_last, V)."""
        p = self.prefix_len = len(prefix_ids)
        lengths = torch.tensor([len(s) for s in segments], device=self.device)
        starts = p + lengths.cumsum(0) - lengths  # each segment's first index among the new tokens
        grid = torch.arange(int(lengths.max()), device=self.device)
        valid = grid[None, :] < lengths[:, None]
        token_index = torch.where(valid, starts[:, None] + grid[None, :], 0)
        ids = torch.tensor(prefix_ids + [t for s in segments for t in s], device=self.device)
        positions = torch.cat([torch.arange(p, device=self.device)] +
                              [torch.arange(p, p + len(s), device=self.device) for s in segments])
        self.next_position = p + lengths
        keep = (starts[:, None] + lengths[:, None] - keep_last + torch.arange(keep_last, device=self.device)).flatten()
        logits = self._forward(ids[None].expand(self.persons, -1), positions, token_index, valid, p, keep,
                               image_features, in_order=False)
        return logits.reshape(self.persons * self.num_queries, keep_last, -1)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed t new tokens to every query, (persons * K, t); returns their logits, (persons * K, t, V)."""
        t = ids.shape[1]
        token_index = (torch.arange(self.num_queries, device=self.device)[:, None] * t
                       + torch.arange(t, device=self.device)[None, :])
        positions = (self.next_position[:, None] + torch.arange(t, device=self.device)[None]).flatten()
        self.next_position = self.next_position + t
        logits = self._forward(ids.reshape(self.persons, -1), positions, token_index,
                               torch.ones_like(token_index, dtype=torch.bool), 0, ids.numel() // self.persons, None,
                               in_order=True)
        return logits.reshape(self.persons * self.num_queries, t, -1)

    def _forward(self, ids, positions, token_index, token_valid, prefix_tokens, keep, image_features, in_order):
        token_slot = self.length + token_index  # new tokens are written one after another
        column = self.own_count[:, None] + torch.arange(token_index.shape[1], device=self.device)[None, :]
        self.own_slots[token_valid.nonzero(as_tuple=True)[0], column[token_valid]] = token_slot[token_valid]
        self.own_count = self.own_count + token_valid.sum(dim=1)
        written = torch.arange(self.own_slots.shape[1], device=self.device)[None, :] < self.own_count[:, None]
        own_visible = written[:, None, :] & (self.own_slots[:, None, :] <= token_slot[:, :, None])
        layout = SharedPrefixLayout(self.prefix_len, prefix_tokens, token_index, token_valid, self.own_slots,
                                    own_visible, in_order)
        self.length += ids.shape[1]
        with shared_prefix_attention(self.model.config.text_config):
            out = self.model(input_ids=ids, image_features=image_features,
                             position_ids=positions[None].expand(self.persons, -1), cache=self.cache,
                             use_cache=True, logits_to_keep=keep, shared_prefix=layout)
        return out.logits.float()


@torch.no_grad()
def fast_decode(model, image_features: torch.Tensor, prefix_ids: list[int], query_ids: list[list[int]],
                grammar: AnswerGrammar | None, eos_token_id: int, max_new_tokens: int,
                suppress_token_ids: tuple[int, ...] = (), runner_up_steps: frozenset[int] = frozenset()) -> DecodedAnswers:
    """Ask each of P persons, whose features are ``image_features`` (P, N, D), the K queries
    ``query_ids``; the answers come person by person (P * K rows).

    With ``grammar`` the answers follow it (structural tokens forced); with ``None`` it is plain greedy
    decoding up to EOS or ``max_new_tokens``, never emitting ``suppress_token_ids`` (then
    ``value_scores`` holds per-step probabilities, not split by value: the caller parses the text).
    ``runner_up_steps``: chosen steps (counted from 0 among the grammar's choices) that take the second
    most likely allowed token instead of the most likely: the other branch of a small beam over the digits.
    """
    device = image_features.device
    persons, k = image_features.shape[0], len(query_ids)
    # Tokens every query starts with ("Keypoint: The") are the same for all of a person's queries: they
    # join the prefix. Each query keeps at least one token of its own.
    shared = _common_prefix_length(query_ids, limit=min(len(q) for q in query_ids) - 1)
    prefix_ids = prefix_ids + query_ids[0][:shared]
    items = grammar.items if grammar is not None else ()
    # Forced tokens at the start of the answer join the first pass: "Answer:" + "▁[0." in one go.
    first_choice = next((i for i, item in enumerate(items) if not item.forced), len(items))
    lead = [item.allowed[0] for item in items[:first_choice]]
    segments = [q[shared:] + lead for q in query_ids]
    later_tokens = len(items) - len(lead) if grammar is not None else max_new_tokens  # per query, at most
    batch = _PackedPersons(model, persons, k, capacity=len(prefix_ids) + sum(map(len, segments)) + k * later_tokens,
                           own_capacity=max(map(len, segments)) + later_tokens, device=device)
    # logits[:, j] predicts items[j] for j < len(lead); the last position predicts the first choice.
    logits = batch.start(prefix_ids, segments, image_features, keep_last=len(lead) + 1)
    rows = persons * k
    if grammar is None:
        return _greedy(batch, logits[:, -1], rows, eos_token_id, max_new_tokens, device, suppress_token_ids)

    emitted = _Emitted(rows, device)
    for j, item in enumerate(items[:first_choice]):
        emitted.force(item, logits[:, j])
    next_logits = logits[:, -1]

    i = first_choice
    while i < len(items):
        chosen = emitted.choose(items[i], next_logits, runner_up=len(emitted.choice_values) in runner_up_steps)
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
        logits = batch.step(torch.cat([chosen[:, None], run.expand(rows, len(run))], dim=1))
        for m, item in enumerate(items[i + 1:j]):
            emitted.force(item, logits[:, m])
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
        self.choice_probs: list[torch.Tensor] = []
        self.choice_values: list[int] = []

    def force(self, item: GrammarItem, logits: torch.Tensor) -> None:
        token = torch.full((self.rows,), item.allowed[0], dtype=torch.long, device=self.device)
        self._add(token, logits.softmax(-1)[:, item.allowed[0]], item.value_index)

    def choose(self, item: GrammarItem, logits: torch.Tensor, runner_up: bool = False) -> torch.Tensor:
        allowed = torch.tensor(item.allowed, device=self.device)
        # argmax (not topk) for the best: its tie-breaking is generate's, which parity relies on
        best = logits[:, allowed].topk(2, dim=-1).indices[:, 1] if runner_up else logits[:, allowed].argmax(dim=-1)
        token = allowed[best]
        self._add(token, logits.softmax(-1).gather(1, token[:, None])[:, 0], item.value_index)
        self.choice_probs.append(logits[:, allowed].softmax(-1).cpu())
        self.choice_values.append(item.value_index)
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
        return DecodedAnswers(torch.stack(self.tokens, dim=1).tolist(), scores, tuple(self.choice_probs),
                              tuple(self.choice_values))


def _greedy(batch: _PackedPersons, logits: torch.Tensor, rows: int, eos_token_id: int, max_new_tokens: int,
            device: torch.device, suppress_token_ids: tuple[int, ...]) -> DecodedAnswers:
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
        # Finished queries keep feeding tokens so the batch stays rectangular; only they can see them.
        logits = batch.step(best[:, None])[:, -1]
    width = max(1, max(len(p) for p in step_probs))
    scores = torch.full((rows, width), float("nan"))
    for q, p in enumerate(step_probs):
        scores[q, : len(p)] = torch.tensor(p)
    return DecodedAnswers(tokens, scores)
