"""The keypoint conversation as token ids: prompts, training labels and the answer grammar.

One training sample is the image prefix followed by one round per asked keypoint::

    Image: <image tokens>\\n
    Keypoint: {description}\\n
    Question: Where is the {name} of this person in this image? Please provide its coordinates.\\n
    Answer: [0.412,0.655]<eos>                      <- only the answer and <eos> are supervised
    Keypoint: ...                                   <- the next round follows the EOS directly

An inference prompt is the image prefix and one round up to ``Answer:``. :class:`PromptStyle` holds the
words, :class:`PromptBuilder` turns them into ids for a given Hugging Face tokenizer.

Ids are built segment by segment, never by tokenizing the whole text and counting tokens:

- the prefix (BOS, image prefix, image tokens, separator) is the same for every keypoint of a person, so
  the fast engine can prefill it once and reuse its KV cache;
- every text after the first is encoded as a *continuation* (no start-of-text ``▁`` that sentencepiece
  tokenizers would add), so ``prefix_ids() + query_ids(k)`` is exactly the inference prompt and a
  training round is exactly that prompt followed by the answer the model has to generate;
- the answer is encoded one unit at a time (a character, or a whole ``<...>`` added token): its first
  unit together with the separator, e.g. Llama's ``▁[``, then one token per unit. This is the natural
  tokenization for Llama and SmolLM2 (digits are single tokens) and it is exactly what a decoder
  constrained by :meth:`PromptBuilder.allowed_answer_ids` produces, for any tokenizer.

Each training example is checked (``check=True``): the supervised tokens must decode to the supervised
answer text plus EOS, round by round, and every label must equal the input id at its position.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from ..bounds import CONFIG_SIZE_LIMITS, check_range, check_text
from ..codecs.text import ANSWER_OPEN, CoordinateCodec
from ..keypoints import Keypoint

IGNORE_INDEX = -100  # label of tokens without loss (PyTorch cross-entropy's default ignore_index)
DEFAULT_QUESTION = "Where is the {name} of this person in this image? Please provide its coordinates."

# A continuation is encoded as encode(anchor + text) minus encode(anchor): the first anchor whose ids
# stay a prefix is used. "\n" suits sentencepiece (a byte token that never merges); "a" covers byte-level
# BPEs where "\n" would merge with a text that starts with "\n".
_ANCHORS = ("\n", "a")
_ANSWER_UNIT = re.compile(r"<[^<>]+>|.", flags=re.DOTALL)  # a whole <...> token, or one character

AnswerPieces = Sequence[tuple[str, bool]]  # the codec's answer_pieces(): (text, supervised) pairs


@dataclass(frozen=True)
class PromptStyle:
    """The words of the conversation and how they meet special tokens. Serializable with ``to_dict``.

    Attributes:
        image_prefix: text before the image tokens.
        image_token: the placeholder token, repeated ``num_image_tokens`` times; its embeddings are
            replaced by the projected image features.
        image_suffix: text between the image tokens and the first round.
        description_prefix: starts the description turn (``"Keypoint: "``); the turn is left out
            when ``with_description`` is False (the paper's "no description" ablation).
        question_prefix: starts the question turn.
        question_template: the question; ``{name}`` is replaced by the keypoint's name.
        answer_prefix: the last text of a prompt; the model's answer follows it.
        answer_separator: between ``answer_prefix`` and the answer; it belongs to the answer's first
            token (Llama: ``▁[``) and is therefore generated, not prompted.
        turn_separator: ends the description and question turns.
        with_description: ask with the keypoint's description turn.
        strip_space_around_special_tokens: drop whitespace next to the image tokens and EOS, as the
            reference's slow sentencepiece tokenizer silently does (``"Image: "`` -> ``Image:``, the
            ``"\\n"`` after the image tokens vanishes). Needed for reference checkpoints.
    """

    image_prefix: str = "Image: "
    image_token: str = "<image>"
    image_suffix: str = "\n"
    description_prefix: str = "Keypoint: "
    question_prefix: str = "Question: "
    question_template: str = DEFAULT_QUESTION
    answer_prefix: str = "Answer:"
    answer_separator: str = " "
    turn_separator: str = "\n"
    with_description: bool = True
    strip_space_around_special_tokens: bool = False

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"prompt_style.{item.name} = {str(value)[:40]!r} is not true or false")
            if item.type == "str":
                check_text(f"prompt_style.{item.name}", value)
        if "{name}" not in self.question_template:
            raise ValueError(f"question_template must contain '{{name}}', got {self.question_template!r}")
        if not self.image_token:
            raise ValueError("image_token must be a non-empty token string")
        if self.strip_space_around_special_tokens and self.image_suffix.strip():
            raise ValueError(
                "with strip_space_around_special_tokens the image_suffix must be whitespace (it is dropped), "
                f"got {self.image_suffix!r}"
            )

    @classmethod
    def default(cls) -> PromptStyle:
        """Our style: the paper's words, tokenized as written (the newline after the image is kept)."""
        return cls()

    @classmethod
    def reference(cls) -> PromptStyle:
        """Id-identical to the reference implementation (Llama tokenizer, ``<im_patch>`` image token)."""
        return cls(image_token="<im_patch>", strip_space_around_special_tokens=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> PromptStyle:
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown PromptStyle fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**config)

    def query_text(self, keypoint: Keypoint) -> str:
        """One round's prompt text, from the description turn (if any) through ``answer_prefix``."""
        description = ""
        if self.with_description:
            if not keypoint.description.strip():
                raise ValueError(f"keypoint {keypoint.name!r} has no description but the style asks with one")
            description = self.description_prefix + keypoint.description + self.turn_separator
        question = self.question_template.replace("{name}", keypoint.name)
        return description + self.question_prefix + question + self.turn_separator + self.answer_prefix


class PromptBuilder:
    """Token ids and labels of keypoint conversations for one tokenizer and style.

    Args:
        tokenizer: any Hugging Face tokenizer. ``style.image_token`` is added to it as a special token if
            it is absent (in place; Llama gets ``<im_patch>`` = 32000 like the reference). It must have an
            EOS token. Its own BOS convention is kept: the ids it prepends to an encoded text (Llama:
            ``<s>``; SmolLM2: none) start every sequence.
        style: the conversation's words; :meth:`PromptStyle.default` if None.
        num_image_tokens: image placeholders per image (256 for ViT-L/14 at 224 px).

    Example:
        >>> builder = PromptBuilder(tokenizer, PromptStyle.reference(), num_image_tokens=256)
        >>> codec = DecimalCodec()
        >>> example = builder.training_example([(knee, codec.answer_pieces([0.57, 0.771]))])
        >>> prompt = builder.inference_ids(knee)  # == builder.prefix_ids() + builder.query_ids(knee)
    """

    def __init__(self, tokenizer, style: PromptStyle | None = None, num_image_tokens: int = 256):
        check_range("num_image_tokens", num_image_tokens, 1, CONFIG_SIZE_LIMITS["num_image_tokens"])
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)} has no EOS token; answers end with one")
        self.tokenizer = tokenizer
        self.style = style if style is not None else PromptStyle.default()
        self.num_image_tokens = num_image_tokens
        self.eos_token_id: int = tokenizer.eos_token_id
        self.image_token_id: int = _ensure_special_token(tokenizer, self.style.image_token)
        self.bos_ids: list[int] = _leading_special_ids(tokenizer)
        self._anchor_ids = {anchor: self._encode(anchor) for anchor in _ANCHORS}
        self._unit_ids: dict[str, int] = {}
        self._query_ids: dict[tuple[str, str], list[int]] = {}
        self._answer_start_ids = self._continuation_ids(self.style.answer_separator + ANSWER_OPEN)
        self._prefix_ids = self._build_prefix_ids()

    # -- prompts ------------------------------------------------------------------------------------
    def prefix_ids(self) -> list[int]:
        """BOS + image prefix + image tokens + image suffix: the first ids of every sequence of an image."""
        return list(self._prefix_ids)

    def query_ids(self, keypoint: Keypoint) -> list[int]:
        """One round's prompt ids up to and including ``Answer:``; the same in every round of a sample."""
        key = (keypoint.name, keypoint.description)
        if key not in self._query_ids:
            text = self.style.query_text(keypoint)
            if self.style.strip_space_around_special_tokens:
                text = text.lstrip()  # a round follows the image tokens or an EOS
            self._query_ids[key] = self._continuation_ids(text)
        return list(self._query_ids[key])

    def inference_ids(self, keypoint: Keypoint) -> list[int]:
        """The full prompt asking for one keypoint: ``prefix_ids() + query_ids(keypoint)``."""
        return self.prefix_ids() + self.query_ids(keypoint)

    # -- training -----------------------------------------------------------------------------------
    def answer_ids(self, pieces: AnswerPieces) -> tuple[list[int], list[int]]:
        """Answer pieces (from a codec's ``answer_pieces``) -> (ids, labels), EOS included.

        The ids are ``answer_start_ids()`` followed by one token per further unit and the EOS; labels
        copy the ids of supervised pieces (the start ids follow the first piece) and of the EOS, and
        are ``IGNORE_INDEX`` elsewhere.
        """
        units = [(unit, supervised) for text, supervised in pieces for unit in _ANSWER_UNIT.findall(text)]
        if not units or units[0][0] != ANSWER_OPEN:
            raise ValueError(f"an answer must start with {ANSWER_OPEN!r}, got pieces {list(pieces)!r}")
        ids = list(self._answer_start_ids)
        labels = list(ids) if units[0][1] else [IGNORE_INDEX] * len(ids)
        for unit, supervised in units[1:]:
            unit_id = self._unit_id(unit)
            ids.append(unit_id)
            labels.append(unit_id if supervised else IGNORE_INDEX)
        ids.append(self.eos_token_id)
        labels.append(self.eos_token_id)
        return ids, labels

    def training_example(
        self, rounds: Sequence[tuple[Keypoint, AnswerPieces]], check: bool = True
    ) -> dict[str, list[int]]:
        """One training sample: the prefix once, then each round's query, answer and EOS.

        Args:
            rounds: ``[(keypoint, codec.answer_pieces(coords)), ...]``, one per asked keypoint.
            check: verify the label mask with :meth:`check_labels` (cheap; on by default).

        Returns:
            ``{"input_ids": [L], "labels": [L]}``, labels ``IGNORE_INDEX`` except supervised answer
            tokens and each round's EOS.
        """
        if not rounds:
            raise ValueError("a training example needs at least one round")
        input_ids = self.prefix_ids()
        labels = [IGNORE_INDEX] * len(input_ids)
        for keypoint, pieces in rounds:
            query = self.query_ids(keypoint)
            answer, answer_labels = self.answer_ids(pieces)
            input_ids += query + answer
            labels += [IGNORE_INDEX] * len(query) + answer_labels
        if check:
            self.check_labels(input_ids, labels, [pieces for _, pieces in rounds])
        return {"input_ids": input_ids, "labels": labels}

    def check_labels(
        self, input_ids: Sequence[int], labels: Sequence[int], answers: Sequence[AnswerPieces]
    ) -> None:
        """Raise ValueError unless the supervised tokens are exactly each answer's supervised text + EOS.

        Every label must be ``IGNORE_INDEX`` or the input id at its position; the supervised tokens,
        cut after each EOS, must decode (surrounding whitespace aside) to the round's supervised piece
        texts followed by the EOS token text.
        """
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
        name = _tokenizer_name(self.tokenizer)
        rounds: list[list[int]] = [[]]
        for position, (token_id, label) in enumerate(zip(input_ids, labels, strict=True)):
            if label == IGNORE_INDEX:
                continue
            if label != token_id:
                raise ValueError(
                    f"label mask check failed for tokenizer {name}: label {label} at position {position} "
                    f"is not the input id there ({token_id}); labels are misaligned"
                )
            rounds[-1].append(label)
            if label == self.eos_token_id:
                rounds.append([])
        rounds = [ids for ids in rounds if ids]
        if len(rounds) != len(answers):
            raise ValueError(
                f"label mask check failed for tokenizer {name}: {len(answers)} answers but the supervised "
                f"tokens form {len(rounds)} EOS-terminated rounds: {[self._decode(ids) for ids in rounds]!r}"
            )
        for index, (ids, pieces) in enumerate(zip(rounds, answers, strict=True)):
            expected = "".join(text for text, supervised in pieces if supervised) + self.tokenizer.eos_token
            supervised_text = self._decode(ids)
            if supervised_text.strip() != expected.strip():
                raise ValueError(
                    f"label mask check failed for tokenizer {name}, round {index}: the supervised tokens "
                    f"decode to {supervised_text!r} but the supervised answer is {expected!r}"
                )

    # -- text, for logs and for comparing with recorded prompts ------------------------------------
    def prefix_text(self) -> str:
        style = self.style
        return style.image_prefix + style.image_token * self.num_image_tokens + style.image_suffix

    def inference_text(self, keypoint: Keypoint) -> str:
        """The prompt as text. Ids come from :meth:`inference_ids`, never from tokenizing this."""
        return self.prefix_text() + self.style.query_text(keypoint)

    def training_text(self, rounds: Sequence[tuple[Keypoint, AnswerPieces]]) -> str:
        """A training sample as text (the reference's ``prompt_text`` in reference style)."""
        rounds_text = "".join(
            self.style.query_text(keypoint) + self.style.answer_separator
            + "".join(text for text, _ in pieces) + self.tokenizer.eos_token
            for keypoint, pieces in rounds
        )
        return self.prefix_text() + rounds_text

    # -- constrained decoding -----------------------------------------------------------------------
    def answer_start_ids(self) -> list[int]:
        """The ids every answer starts with after ``Answer:``: separator + ``[`` (Llama: [518] ``▁[``)."""
        return list(self._answer_start_ids)

    def unit_token_ids(self, units: Sequence[str] = "0123456789.,[]") -> dict[str, int]:
        """The single token id of each answer unit (a character or a ``<...>`` token) inside an answer."""
        return {unit: self._unit_id(unit) for unit in units}

    def allowed_answer_ids(self, codec: CoordinateCodec) -> list[list[int]]:
        """The token ids allowed at each generation step after the prompt, for a grammar-constrained decoder.

        ``codec`` is a :class:`~locllm.codecs.DecimalCodec` or ``LocationTokenCodec``. Step ``t``
        of the answer may only be one of ``steps[t]``: first the answer start ids (one fixed id per step),
        then the codec's grammar (e.g. ``0``, ``.``, three steps of any digit, ``,``, ...), then the EOS.
        ``len(steps)`` is the exact number of new tokens (Llama 2D: 14 = 13 answer tokens + EOS). Steps
        with one allowed id need no choice and can be forced; the others are the value digits, whose
        probabilities give the keypoint's confidence. Decoding the chosen ids with ``codec.decode`` always
        gives a valid answer.
        """
        steps = [[token_id] for token_id in self._answer_start_ids]
        # the grammar's first position, ANSWER_OPEN, is written by the start ids together with the separator
        steps += [[self._unit_id(unit) for unit in allowed] for allowed in codec.answer_grammar()[1:]]
        steps.append([self.eos_token_id])
        return steps

    # -- encoding helpers ---------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _continuation_ids(self, text: str) -> list[int]:
        """Ids of ``text`` where it continues a sequence (no start-of-text marker such as Llama's ``▁``)."""
        for anchor, anchor_ids in self._anchor_ids.items():
            ids = self._encode(anchor + text)
            if ids[: len(anchor_ids)] == anchor_ids:
                return ids[len(anchor_ids):]
        raise ValueError(
            f"tokenizer {_tokenizer_name(self.tokenizer)} merges {text[:40]!r} with every anchor "
            f"{list(self._anchor_ids)!r}; cannot encode it as a continuation"
        )

    def _unit_id(self, unit: str) -> int:
        if unit not in self._unit_ids:
            ids = self._continuation_ids(unit)
            if len(ids) != 1:
                raise ValueError(
                    f"tokenizer {_tokenizer_name(self.tokenizer)} writes the answer unit {unit!r} as "
                    f"{len(ids)} tokens {self.tokenizer.convert_ids_to_tokens(ids)}; answers need one token "
                    "per unit (for location tokens: add codec.new_tokens() to the tokenizer first)"
                )
            self._unit_ids[unit] = ids[0]
        return self._unit_ids[unit]

    def _build_prefix_ids(self) -> list[int]:
        style = self.style
        image_prefix, image_suffix = style.image_prefix, style.image_suffix
        if style.strip_space_around_special_tokens:
            image_prefix, image_suffix = image_prefix.rstrip(), ""
        ids = list(self.bos_ids)
        if image_prefix:
            ids += self._encode(image_prefix)  # the first text: encoded as a start of text
        ids += [self.image_token_id] * self.num_image_tokens
        if image_suffix:
            ids += self._continuation_ids(image_suffix)
        return ids


def _tokenizer_name(tokenizer) -> str:
    return f"{type(tokenizer).__name__}({getattr(tokenizer, 'name_or_path', '') or 'unnamed'!r})"


def _ensure_special_token(tokenizer, token: str) -> int:
    """The id of ``token``, added to the tokenizer as a special token if it does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        tokenizer.add_tokens([token], special_tokens=True)
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)} splits {token!r} into several tokens: {ids}")
    return ids[0]


def _leading_special_ids(tokenizer) -> list[int]:
    """The ids the tokenizer itself puts before an encoded text (its BOS convention; often [bos] or [])."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    with_special = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start: start + len(plain)] == plain:
            return with_special[:start]
    raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)}: cannot find a text between its special tokens")
