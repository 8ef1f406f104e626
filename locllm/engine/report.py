"""What ``locllm predict`` and ``locllm serve`` report: the keypoints asked for and the answers as JSON."""

from __future__ import annotations

from collections.abc import Callable

from ..keypoints import KeypointSet, parse_describe, resolve_keypoints


def requested_keypoints(keypoints: str, describe: list[str],
                        resolve: Callable[[str], KeypointSet] = resolve_keypoints) -> tuple[KeypointSet, list[bool]]:
    """The keypoint set asked for (``--keypoints``), with described extras (``--describe``) appended; and which
    entries are extras.

    ``resolve`` reads ``keypoints``; a localizer's ``keypoint_set`` also knows the keypoints of its checkpoint.
    """
    base = resolve(keypoints)
    extras = tuple(parse_describe(spec) for spec in describe)
    known = {k.name for k in base}
    for extra in extras:
        if extra.name in known:
            raise ValueError(f"--describe {extra.name!r}: already asked by --keypoints")
    kp_set = KeypointSet(base.name, base.keypoints + extras, base.skeleton, None)
    return kp_set, [False] * len(base) + [True] * len(extras)


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
