import numpy as np
import pytest
import torch

from locllm.data.images import ImageReadError
from locllm.engine import Localizer
from locllm.keypoints import COCO_KEYPOINTS

from .conftest import tiny_checkpoint

IMAGE = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
BOXES = [[10, 10, 50, 80], [0, 0, 90, 120], [30, 5, 40, 40]]


def _same_answers(localizer, keypoints="coco"):
    localizer.answerer.constrained = False
    fast = localizer.localize(IMAGE, BOXES, keypoints, mode="fast")
    reference = localizer.localize(IMAGE, BOXES, keypoints, mode="reference")
    localizer.answerer.constrained = True
    return [p.answers for p in fast], [p.answers for p in reference]


def test_fast_greedy_equals_reference_char_tokenizer(char_checkpoint):
    fast, reference = _same_answers(Localizer.from_pretrained(char_checkpoint, device="cpu"))
    assert fast == reference
    assert len(fast) == 3 and len(fast[0]) == 17


@pytest.mark.parametrize("keypoints", [["nose"], ["left knee", "left kneecap"]])
def test_fast_greedy_equals_reference_when_queries_share_most_tokens(char_checkpoint, keypoints):
    """A lone query, or two that differ late, lend all but their last different tokens to the prefix."""
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    fast, reference = _same_answers(localizer, [(name, f"the {name} of the person") for name in keypoints])
    assert fast == reference


@pytest.mark.parametrize("name", ["llama2_tokenizer", "smollm2_tokenizer"])
def test_fast_greedy_equals_reference_real_tokenizers(name, request, tmp_path):
    folder = tiny_checkpoint(tmp_path, tokenizer=request.getfixturevalue(name))
    fast, reference = _same_answers(Localizer.from_pretrained(folder, device="cpu"), ["nose", "left knee", "neck"])
    assert fast == reference


def test_fast_greedy_equals_reference_with_eager_attention(char_checkpoint):
    """The fast path attends its own way (shared prefix), whatever the model was loaded with, and
    leaves the model's attention as it was."""
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    localizer.model.language_model.set_attn_implementation("eager")
    fast, reference = _same_answers(localizer)
    assert fast == reference
    assert localizer.model.config.text_config._attn_implementation == "eager"


def test_fast_mode_keeps_one_cache_row_per_person(char_checkpoint):
    """The K queries of a person share its row (and its prefix KV) instead of K copies of it."""
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    rows = []
    hook = localizer.model.language_model.register_forward_hook(
        lambda module, args, kwargs, out: rows.append((kwargs["inputs_embeds"].shape[0],
                                                       kwargs["cache"].layers[0].keys.shape[0])),
        with_kwargs=True)
    try:
        localizer.localize(IMAGE, BOXES, "coco", mode="fast")
    finally:
        hook.remove()
    assert len(rows) > 1 and set(rows) == {(len(BOXES), len(BOXES))}


def test_reference_mode_encodes_the_images_at_every_step_and_fast_mode_once(char_checkpoint):
    """The cost the reference pays (SPEC 3): each generate step re-encodes the person's K image copies."""
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    localizer.answerer.constrained = False  # a random model writes answers of any length: count the steps taken
    encoded = []
    original = localizer.model.get_image_features
    localizer.model.get_image_features = lambda pixels: encoded.append(len(pixels)) or original(pixels)
    localizer.localize(IMAGE, BOXES[:1], ["nose", "neck"], mode="reference")
    assert len(encoded) > 1 and set(encoded) == {2}  # prefill and every later step, both copies each time
    encoded.clear()
    localizer.localize(IMAGE, BOXES[:1], ["nose", "neck"], mode="fast")
    assert encoded == [1]


def test_constrained_answers_always_parse(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    people = localizer.localize(IMAGE, BOXES, "coco")
    for person in people:
        assert person.valid.all()
        assert np.isfinite(person.keypoints).all()
        assert ((person.scores > 0) & (person.scores <= 1)).all()
        assert all(a.startswith("[0.") and a.endswith("]") for a in person.answers)
        # Crop coordinates in [0, 1) land inside the (square-padded) box.
        x, y, w, h = person.box
        side = max(w, h)
        cx, cy = x + w / 2, y + h / 2
        assert (np.abs(person.keypoints[:, 0] - cx) <= side / 2 + 1e-3).all()
        assert (np.abs(person.keypoints[:, 1] - cy) <= side / 2 + 1e-3).all()


def test_batching_does_not_change_answers(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu", persons_per_batch=8)
    together = localizer.localize(IMAGE, BOXES, "coco")
    localizer.persons_per_batch = 1
    alone = localizer.localize(IMAGE, BOXES, "coco")
    for a, b in zip(together, alone, strict=True):
        assert a.answers == b.answers
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_localize_many_batches_persons_of_different_images(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    images = [IMAGE, IMAGE[:, ::-1].copy(), IMAGE[::-1].copy()]
    boxes = [BOXES[:1], [[10, 10, 0, 20], BOXES[1]], None]
    encoded = []
    original = localizer.model.get_image_features
    localizer.model.get_image_features = lambda pixels: encoded.append(len(pixels)) or original(pixels)
    together = localizer.localize_many(images, boxes, ["nose", "neck"])
    assert encoded == [3]  # the three usable persons of three images in one batch
    assert [len(people) for people in together] == [1, 2, 1] and "zero" in together[1][0].error
    localizer.model.get_image_features = original
    for image, image_boxes, people in zip(images, boxes, together, strict=True):
        alone = localizer.localize(image, image_boxes, ["nose", "neck"])
        for a, b in zip(people, alone, strict=True):
            assert a.answers == b.answers and a.error == b.error
            np.testing.assert_allclose(a.keypoints, b.keypoints)
            np.testing.assert_array_equal(a.box, b.box)
    with pytest.raises(ValueError, match="2 images but 1 box lists"):
        localizer.localize_many(images[:2], boxes[:1])


def test_custom_keypoint_by_description(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    people = localizer.localize(IMAGE, None, ["left knee", ("belly button", "The navel, in the middle of the belly.")])
    assert people[0].names == ["left knee", "belly button"]
    assert people[0].keypoints.shape == (2, 2)
    np.testing.assert_array_equal(people[0].box, [0, 0, 90, 120])  # no boxes: the whole image


def test_bad_inputs_are_clear(char_checkpoint, tmp_path):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    with pytest.raises(ImageReadError, match="missing.png"):
        localizer.localize(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="corrupt.png"):
        localizer.localize(corrupt)
    with pytest.raises(KeyError, match="give a description"):
        localizer.localize(IMAGE, None, ["left knee", "tail tip"])
    with pytest.raises(ValueError, match="empty"):
        localizer.localize(IMAGE, None, [])
    with pytest.raises(ValueError, match="at most"):
        localizer.localize(IMAGE, None, [("x", "word " * 500)])
    with pytest.raises(ValueError, match="mode"):
        localizer.localize(IMAGE, mode="slow")
    people = localizer.localize(IMAGE, [[10, 10, 0, 20], [500, 500, 10, 10], [10, 10, 30, 30]], ["nose"])
    assert "zero" in people[0].error and "outside" in people[1].error and people[2].error is None
    assert not people[0].valid.any() and people[2].valid.all()


@pytest.mark.slow
def test_constrained_fast_equals_reference_on_a_trained_model(tmp_path):
    """Overfit a tiny model to fixed answers; then both paths must give the same coordinates."""
    from locllm.codecs import DecimalCodec
    from locllm.prompts import PromptStyle

    short = PromptStyle(with_description=False, question_template="{name}?")  # short sequences, fast steps
    folder = tiny_checkpoint(tmp_path, style=short, lora_scale=0.0)
    localizer = Localizer.from_pretrained(folder, device="cpu")
    model, builder, codec = localizer.model, localizer.processor.builder, DecimalCodec()
    model.language_model.requires_grad_(True)
    targets = {"nose": (0.412, 0.655), "left knee": (0.25, 0.875), "right ankle": (0.703, 0.118)}
    rounds = [[(COCO_KEYPOINTS[COCO_KEYPOINTS.index(n)], codec.answer_pieces(xy))] for n, xy in targets.items()]
    examples = [builder.training_example(r) for r in rounds]
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in examples])
    labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in examples])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples])
    crops = localizer.processor(IMAGE, np.array([BOXES[0]])).pixel_values.expand(3, -1, -1, -1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(200):
        loss = model(input_ids=ids, pixel_values=crops, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    fast = localizer.localize(IMAGE, [BOXES[0]], list(targets), mode="fast")[0]
    reference = localizer.localize(IMAGE, [BOXES[0]], list(targets), mode="reference")[0]
    assert reference.valid.all(), reference.answers
    assert fast.answers == reference.answers == [codec.encode(xy) for xy in targets.values()]
    np.testing.assert_allclose(fast.keypoints, reference.keypoints)
    np.testing.assert_allclose(fast.scores, reference.scores, atol=1e-4)


def test_checkpoint_descriptions_replace_only_builtin_ones(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    localizer.descriptions = {"left_knee": "Their words for the knee.", "belly button": "Not used."}
    asked = localizer.keypoint_set(["left knee", ("belly button", "The navel."), ("nose", "My own nose words.")])
    assert [k.description for k in asked] == ["Their words for the knee.", "The navel.", "My own nose words."]


@pytest.mark.slow
def test_demo_checkpoint_fast_equals_reference():
    """On the trained demo checkpoint the constrained fast path gives the reference's coordinates."""
    from locllm.apis.demo import DEMO_CHECKPOINT
    from locllm.data.synth import render_scene

    if not (DEMO_CHECKPOINT / "config.json").is_file():
        pytest.skip(f"the demo checkpoint is absent from {DEMO_CHECKPOINT}")
    localizer = Localizer.from_pretrained(DEMO_CHECKPOINT, device="cpu")
    rng = np.random.default_rng(7)
    same, total = 0, 0
    for _ in range(3):
        image, people = render_scene(rng, size=128, num_persons=2)
        boxes = [p["bbox"] for p in people]
        fast = localizer.localize(image, boxes, "coco", mode="fast")
        reference = localizer.localize(image, boxes, "coco", mode="reference")
        for a, b in zip(fast, reference, strict=True):
            assert b.valid.all(), b.answers  # the trained model writes well-formed answers on its own
            same += sum(x == y for x, y in zip(a.answers, b.answers, strict=True))
            total += len(a.answers)
    # Ties aside: a digit whose top two probabilities are within float noise may differ.
    assert same / total >= 0.97, f"{same}/{total} identical"
