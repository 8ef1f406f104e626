"""What ``locllm predict`` and ``locllm serve`` report: the keypoints asked for and the answers as JSON."""

from __future__ import annotations

from collections.abc import Callable

from ..keypoints import KeypointSet, normalize_name, parse_describe, resolve_keypoints


def requested_keypoints(keypoints: str, describe: list[str],
                        resolve: Callable[[str], KeypointSet] = resolve_keypoints) -> tuple[KeypointSet, list[bool]]:
    """The keypoint set asked for (``--keypoints``) with its described keypoints (``--describe``); and which
    entries are described ones.

    A described keypoint that ``--keypoints`` names is asked in its place there ("left knee,belly" with
    "belly=..."); the others are appended. ``resolve`` reads ``keypoints``; a localizer's ``keypoint_set`` also
    knows the keypoints of its checkpoint.
    """
    extras = tuple(parse_describe(spec) for spec in describe)
    described = {normalize_name(extra.name): extra for extra in extras}
    spec = keypoints
    if isinstance(keypoints, str) and ("," in keypoints or normalize_name(keypoints) in described):
        spec = [described.get(normalize_name(item), item) for item in keypoints.split(",")]
    base = resolve(spec)
    named = [extra for extra in extras if any(kp is extra for kp in base)]
    appended = tuple(extra for extra in extras if not any(extra is kp for kp in named))
    known = {normalize_name(k.name) for k in base}
    for extra in appended:
        if normalize_name(extra.name) in known:
            raise ValueError(f"--describe {extra.name!r}: already asked by --keypoints")
    kp_set = KeypointSet(base.name, base.keypoints + appended, base.skeleton, None)
    return kp_set, [any(kp is extra for extra in extras) for kp in kp_set]


def novel_labels(kp_set: KeypointSet, novel: list[bool]) -> list[str]:
    """What the pictures of predict and serve write beside each keypoint: the name of a described one."""
    return [kp.name if is_novel else "" for kp, is_novel in zip(kp_set, novel, strict=True)]


def prediction_report(mode: str, kp_set: KeypointSet, images: list[tuple[str, list]], seconds: float,
                      errors: dict[str, str] | None = None) -> dict:
    """What ``locllm predict --json`` writes (the web demo returns the same): ``images`` holds (image name,
    persons) pairs, ``seconds`` the time spent localizing them all, ``errors`` why an image has no answer
    (unreadable)."""
    errors = errors or {}
    persons_total = sum(len(persons) for _, persons in images)
    return {"mode": mode, "keypoints": kp_set.names,
            "images": [{"image": name, "persons": [p.to_dict() for p in persons], "error": errors.get(name)}
                       for name, persons in images],
            "persons": persons_total, "ms_per_person": 1000 * seconds / persons_total if persons_total else None}


def unreadable_message(names: list[str]) -> str | None:
    """What a user is told when the model's tokenizer cannot read the question for some keypoints (see
    :meth:`~locllm.engine.localizer.Localizer.unreadable_keypoints`); None when it reads them all."""
    if not names:
        return None
    listed = ", ".join(repr(name[:40]) for name in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"the model cannot read the question for {listed}: its tokenizer knows almost none of the words (another "
            "script or vocabulary?). Those answers are flagged (unreadable_question) and scored 0; describe the "
            "keypoint in words the model was trained on")
