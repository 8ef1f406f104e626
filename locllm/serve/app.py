"""The web demo: an image, person boxes and keypoints (built-in ones, or new ones described in your own
words) in; the annotated image, a table and the JSON of ``locllm predict --json`` out.

    locllm serve                                   # the shipped demo checkpoint on http://127.0.0.1:7860
    locllm serve --checkpoint C --port 8000

The page and gradio's API call one plain-Python handler, :func:`localize_request`: bad input raises
``ValueError`` with a message written for the person at the page, which the app shows as an error.
The same endpoint serves as a local REST service::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    picture, table, report_json, status = client.predict(
        handle_file("photo.jpg"), "40,30,120,260", "coco",
        {"headers": ["name", "description"], "data": [["belly button", "The navel, in the middle of the belly."]]},
        "fast", api_name="/localize")
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..apis.image_prediction import ImagePrediction
from ..apis.person_boxes import parse_box
from ..apis.report import novel_labels, requested_keypoints, unreadable_message
from ..data.images import ImageReadError, ImageTooLargeError, read_image_rgb
from ..data.synth import render_scene
from ..engine.localizer import MODES, Localizer
from ..keypoints import KEYPOINT_SETS, KeypointSet, normalize_name, resolve_keypoints
from ..viz import draw_persons
from .box_drawing import BOX_DRAWING_JS

MAX_PERSONS = 20  # one request holds the server (a single model) for every other user meanwhile
MAX_EXTRA_KEYPOINTS = 20
MAX_NAME_CHARS = 80  # a keypoint's name is a few words; its description carries the detail
MAX_EXTRA_ROWS = 100  # rows read from the table (empty ones included) before any is looked at
MAX_TEXT_CHARS = 4000  # the boxes and keypoint-set fields: 20 boxes or a few dozen names
MAX_IMAGE_BYTES = 25 * 2**20  # as launch's max_file_size; also for callers of localize_request
MAX_IMAGE_PIXELS = 50_000_000  # checked from the header before decoding: a small file can decode to gigabytes
MAX_ECHO_CHARS = 300  # an error message quotes at most this much of what was sent
DISPLAY_SIZE = 512  # small images are scaled up to this longer side before drawing, so labels stay legible
EXAMPLE_SEED = 7  # the bundled examples are rendered at startup, the same ones every time
EXTRA_HEADERS = ["name", "description"]
TABLE_HEADERS = ["person", "keypoint", "x", "y", "score", "answer"]

logger = logging.getLogger("locllm.serve")


@dataclass
class LocalizeResult:
    """What one request gives back.

    ``picture``: (H', W', 3) uint8 RGB, the image (scaled up to ``DISPLAY_SIZE`` if smaller) with every
    person's keypoints; ``rows``: one ``TABLE_HEADERS`` row per person and keypoint; ``report``: the
    dict ``locllm predict --json`` writes for this image; ``status``: one line for the page (persons,
    time per person, and why any person got no answer).
    """

    picture: np.ndarray
    rows: list[list]
    report: dict
    status: str


def parse_boxes(text: str | None) -> np.ndarray | None:
    """Person boxes typed one ``x,y,w,h`` per line -> (B, 4); None (the whole image) when there are none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) > MAX_PERSONS:
        raise ValueError(f"{len(lines)} person boxes: at most {MAX_PERSONS} are served per request")
    boxes = []
    for number, line in enumerate(lines, 1):
        try:
            boxes.append(parse_box(line)[0])
        except ValueError as err:
            raise ValueError(f"person box {number}: {err}") from None
    return np.array(boxes)


def described_keypoints(rows, asked: KeypointSet,
                        resolve: Callable[[list[str]], KeypointSet] = resolve_keypoints) -> list[str]:
    """The rows of the extra-keypoint table as ``locllm predict --describe`` specs (``name=description``).

    Empty rows are skipped; a known keypoint's name without a description brings its own description, as
    ``resolve`` finds it (a localizer's ``keypoint_set`` also knows the keypoints of its checkpoint).
    """
    taken = {normalize_name(name) for name in asked.names}
    specs = []
    if len(rows or []) > MAX_EXTRA_ROWS:
        raise ValueError(f"{len(rows)} rows of extra keypoints: at most {MAX_EXTRA_ROWS} are read per request")
    for number, row in enumerate(rows or [], 1):
        name, description = (str(cell if cell is not None else "").strip() for cell in [*row, "", ""][:2])
        if not name and not description:
            continue
        if not name:
            raise ValueError(f"extra keypoint row {number} has a description but no name")
        if "=" in name or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"extra keypoint row {number}: a name is a few words without '=' "
                             f"(at most {MAX_NAME_CHARS} characters)")
        if normalize_name(name) in taken:
            raise ValueError(f"{name!r} is asked twice: it is in the {asked.name} set or an earlier row")
        if not description:
            try:
                description = resolve([name])[0].description
            except KeyError:
                raise ValueError(f"unknown keypoint {name!r}: describe where it is on the body "
                                 "(a sentence in the description column)") from None
        taken.add(normalize_name(name))
        specs.append(f"{name}={description}")
    if len(specs) > MAX_EXTRA_KEYPOINTS:
        raise ValueError(f"{len(specs)} extra keypoints: at most {MAX_EXTRA_KEYPOINTS} are served per request")
    return specs


def display_picture(pixels: np.ndarray, persons: list, kp_set: KeypointSet, novel: list[bool]) -> np.ndarray:
    """The image (scaled up to ``DISPLAY_SIZE`` if smaller) with every person's box and skeleton; keypoints
    coloured by score, the extra keypoints named."""
    scale = max(1.0, DISPLAY_SIZE / max(pixels.shape[:2]))
    picture = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else pixels

    def corners(person):
        x, y, w, h = (float(v) * scale for v in person.box)
        return (round(x), round(y)), (round(x + w), round(y + h))

    return draw_persons(picture, persons, kp_set, labels=novel_labels(kp_set, novel), score_text=False,
                        score_colors=True, to_picture=lambda points: points * scale, box_corners=corners)


def _refusals_bounded_and_logged(handler):
    """A request's ``ValueError`` (the sender's mistake) comes out as one clipped line and is logged as one."""

    @functools.wraps(handler)
    def checked(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except ValueError as err:
            message = clip(" ".join(str(err).split()), 2 * MAX_ECHO_CHARS)
            logger.warning("refused request: %s", message)
            raise ValueError(message) from None

    return checked


@_refusals_bounded_and_logged
def localize_request(localizer: Localizer, image_path: str | Path | None, boxes_text: str | None = "",
                     keypoint_set: str = "coco", extra_rows=None, mode: str = "fast",
                     image_name: str | None = None, detect: bool = False) -> LocalizeResult:
    """One request of the page or the API, checked and answered.

    Args:
        image_path: the image file (an upload); None when nothing was uploaded.
        boxes_text: person boxes, one ``x,y,w,h`` per line; empty: the whole image is one person.
        keypoint_set: a set name (``coco``, ``mpii``, ...) or comma-separated keypoint names, as
            ``locllm predict --keypoints`` takes.
        extra_rows: ``[name, description]`` rows, as ``--describe name=description``.
        mode: ``"fast"`` or ``"reference"`` decoding.
        image_name: what the report calls the image (default: the file's name).
        detect: find the persons with the localizer's detector (``boxes_text`` is then not used).

    Raises:
        ValueError: the input cannot be served; the message says why, for the person who sent it.
    """
    if not image_path:
        raise ValueError("no image: upload one, or pick a bundled SynthPose example")
    image_name = clip(image_name or Path(image_path).name)
    for field, text in (("person boxes", boxes_text), ("keypoint set", keypoint_set)):
        if len(text or "") > MAX_TEXT_CHARS:
            raise ValueError(f"the {field} field holds {len(text)} characters: at most {MAX_TEXT_CHARS} are served")
    check_image_bytes(image_path, image_name)
    try:  # as `locllm predict` reads it, so both see the same pixels; the header's size is checked before decoding
        pixels = read_image_rgb(image_path, max_pixels=MAX_IMAGE_PIXELS)
    except ImageTooLargeError:
        raise ValueError(f"{image_name!r} has more than {MAX_IMAGE_PIXELS // 10**6} megapixels, the most that "
                         "is served: scale it down") from None
    except ImageReadError:
        raise ValueError(f"{image_name!r} is not an image that can be read (PNG, JPEG, BMP, TIFF, WebP...)") from None
    boxes = detect_persons(localizer, pixels) if detect else parse_boxes(boxes_text)
    try:
        extras = described_keypoints(extra_rows, localizer.keypoint_set(keypoint_set), localizer.keypoint_set)
        kp_set, novel = requested_keypoints(keypoint_set, extras, localizer.keypoint_set)
    except KeyError as err:
        raise ValueError(err.args[0]) from None

    prediction = ImagePrediction(mode, kp_set)  # as `locllm predict` answers and reports an image
    persons = prediction.answer(localizer, [(image_name, pixels, boxes)])[0]  # the Localizer answers one batch at a time
    report = prediction.report()
    rows = []
    for number, person in enumerate(report["images"][0]["persons"], 1):
        for name, answer in person["keypoints"].items():
            x, y = answer["xy"][:2] if answer["xy"] else (None, None)
            rows.append([number, name, x, y, answer["score"], answer["answer"]])
    status = (f"{len(persons)} person{'s' if len(persons) != 1 else ''}, {len(kp_set)} keypoints, "
              f"{report['ms_per_person']:.1f} ms per person ({mode} decoding)") if persons else "no person found"
    unreadable = unreadable_message(localizer.unreadable_keypoints(kp_set))
    if unreadable:
        status += f". Note: {unreadable}"
    problems = [f"person {number}: {person.error}" for number, person in enumerate(persons, 1) if person.error]
    if problems:
        status += ". No answer for " + "; ".join(problems)
    return LocalizeResult(display_picture(pixels, persons, kp_set, novel), rows, report, status)


def check_image_bytes(image_path: str | Path, image_name: str) -> None:
    """Refuse a file too big to serve from its byte size, before reading it."""
    size = os.path.getsize(image_path) if os.path.isfile(image_path) else 0  # a missing file: read_image_rgb says so
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{image_name!r} has {size / 2**20:.0f} MB: at most {MAX_IMAGE_BYTES // 2**20} MB are served")


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, so that a message never repeats an unbounded input."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detect_persons(localizer: Localizer, pixels: np.ndarray) -> np.ndarray:
    """The persons the localizer's detector finds: (B, 4) boxes x, y, w, h, the ``MAX_PERSONS`` surest."""
    if localizer.detector is None:
        raise ValueError("this server has no person detector: type or draw the boxes "
                         "(or start it with locllm serve --detector PATH)")
    boxes, scores = localizer.detect(pixels)
    surest = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:MAX_PERSONS]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[surest]


def render_examples(seed: int = EXAMPLE_SEED) -> dict[str, tuple[np.ndarray, str]]:
    """A few SynthPose scenes: ``{label: (image (H, W, 3) uint8 RGB, its person boxes as typed)}``."""
    rng = np.random.default_rng(seed)
    examples = {}
    for persons, difficulty in ((1, "easy"), (2, "easy"), (3, "normal")):
        image, people = render_scene(rng, size=256, num_persons=persons, difficulty=difficulty)
        label = f"SynthPose: {persons} person{'s' if persons > 1 else ''} ({difficulty})"
        examples[label] = (image, "\n".join(",".join(str(int(v)) for v in p["bbox"]) for p in people))
    return examples


def offline_theme():
    """gradio's default look with the system's fonts: the default theme fetches its fonts from the web."""
    import gradio as gr

    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "monospace"))


def keypoint_set_choices(localizer: Localizer) -> list[tuple[str, str]]:
    """The keypoint-set dropdown: (label, value) for every built-in set, and the checkpoint's own keypoints
    (those its ``descriptions.json`` lists, e.g. a keypoint table it was trained on) when they are not
    simply one of the built-in sets. A value is a set name or comma-separated keypoint names."""
    choices = [(f"{name.upper()}-{len(kp_set)}", name) for name, kp_set in KEYPOINT_SETS.items()]
    own = list(localizer.descriptions)
    builtin = [{normalize_name(n) for n in kp_set.names} for kp_set in KEYPOINT_SETS.values()]
    if own and all("," not in name for name in own) and {normalize_name(n) for n in own} not in builtin:
        choices.append((f"this checkpoint's keypoints ({len(own)})", ",".join(own)))
    return choices


def build_app(localizer: Localizer, examples: dict[str, tuple[np.ndarray, str]] | None = None):
    """The gradio page (and its API endpoint ``/localize``) around ``localizer``; launch it with
    ``app.launch(theme=offline_theme())``."""
    import gradio as gr

    examples = render_examples() if examples is None else examples
    set_choices = keypoint_set_choices(localizer)
    has_detector = localizer.detector is not None

    def load_example(label: str | None):
        return examples[label] if label in examples else (gr.skip(), gr.skip())

    def clear_outputs():  # so that an error is never shown beside the answer to an earlier request
        return None, None, "", ""

    # preprocess=False: the handler gets the upload's file as it arrived (gradio has already checked that
    # it is one of its uploads) and decodes it itself, so a file that is not an image gets a readable
    # message, and the pixels are those `locllm predict` reads from the same file.
    def on_localize(image: dict | None, boxes: str, keypoint_set: str, extra: dict | None, mode: str,
                    detect: bool = False):
        image_path = image.get("path") if image else None
        image_name = (image.get("orig_name") or None) if image else None
        try:
            result = localize_request(localizer, image_path, boxes, keypoint_set, (extra or {}).get("data"),
                                      mode, image_name, detect)
        except ValueError as err:  # already logged in one line: no traceback for a user's error
            raise gr.Error(str(err), duration=None, print_exception=False) from None
        return result.picture, result.rows, json.dumps(result.report, indent=2), result.status

    with gr.Blocks(title="LocLLM keypoints", analytics_enabled=False) as app:
        gr.Markdown(
            "# LocLLM: where is the left knee?\n"
            "The model is asked, keypoint by keypoint, *where is the ... of this person?*, and answers with "
            "coordinates. Keypoints are asked in words, so you can add your own: give a name and one sentence "
            "saying where it is on the body."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", format="png", image_mode=None,
                                 sources=["upload", "clipboard"], elem_id="image")
                example = gr.Dropdown(choices=list(examples), value=None, label="... or a bundled SynthPose example",
                                      elem_id="example")
                boxes = gr.Textbox(label="Person boxes", lines=3, elem_id="boxes",
                                   info="x,y,w,h in pixels, one person per line, typed or drawn by dragging on "
                                        "the image; empty: the whole image is one person",
                                   placeholder="40,30,120,260")
                # Only a server with a detector offers it, so that the API of one without stays as it was.
                detect = [gr.Checkbox(label="Detect persons (the person boxes above are then not used)",
                                      value=False, elem_id="detect")] if has_detector else []
                keypoint_set = gr.Dropdown(choices=set_choices, value="coco", label="Keypoint set",
                                           elem_id="keypoint-set")
                extra = gr.Dataframe(value=[["", ""]], headers=EXTRA_HEADERS, datatype="str", type="array",
                                     column_count=2, column_widths=["30%", "70%"], wrap=True, interactive=True,
                                     elem_id="extra",
                                     label="Extra keypoints: a name, and where it is on the body")
                mode = gr.Radio(choices=list(MODES), value="fast", label="Decoding", elem_id="mode",
                                info="fast: shared image prefix, batched, grammar-constrained; "
                                     "reference: the authors' decoding")
                run = gr.Button("Localize", variant="primary", elem_id="run")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                picture = gr.Image(label="Keypoints (colour by score: red low, green high)", format="png",
                                   interactive=False, elem_id="picture")
                table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="table", label="Keypoints")
                report = gr.Textbox(label="JSON, as `locllm predict --json` writes it", lines=8, max_lines=20,
                                    buttons=["copy"], elem_id="report")

        example.change(load_example, inputs=example, outputs=[image, boxes], api_visibility="private")
        run.click(clear_outputs, outputs=[picture, table, report, status], queue=False,
                  api_visibility="private").then(
            on_localize, inputs=[image, boxes, keypoint_set, extra, mode, *detect],
            outputs=[picture, table, report, status],
            api_name="localize", preprocess=False)
        app.load(None, js=BOX_DRAWING_JS, api_visibility="private")
    return app
