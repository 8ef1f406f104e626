"""Keypoints the user brings: custom (name, description) pairs, description files, the reference table.

The reference implementation keeps its descriptions in ``datasets/constants.py``. To prompt an
imported reference checkpoint with byte-identical text we read that file *as data*: the
module is parsed with ``ast`` and only literal assignments are evaluated; nothing is executed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from .sets import Keypoint, KeypointSet, all_known_keypoints, get_keypoint_set, normalize_name

MAX_DESCRIPTION_CHARS = 600  # a sentence; anything longer would crowd out the image in the context


def load_description_file(path: str | Path) -> dict[str, str]:
    """Read ``{name: description}`` from a JSON or YAML file, or from a reference ``constants.py``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"description file not found: {path}")
    if path.suffix == ".py":
        return load_reference_constants(path)["descriptions"]
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a mapping of keypoint name -> description (strings)")
    return data


def load_reference_constants(path: str | Path) -> dict:
    """Parse the reference ``constants.py``: keypoint name lists and the description table.

    Returns ``{"descriptions": {name: sentence}, "names": {"coco": [...], "mpii": [...], "h36m": [...]}}``
    with names spelled exactly as the reference's prompts spell them (e.g. ``head_top``).
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    literals: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                literals[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal: skip it, never evaluate it
    descriptions = literals.get("KeypointLocationDescription")
    if not isinstance(descriptions, dict):
        raise ValueError(f"{path}: no literal KeypointLocationDescription table found")
    names = {
        key: literals[var]
        for key, var in (("coco", "COCO_KEYPOINT_NAME"), ("mpii", "MPII_KEYPOINT_NAME"), ("h36m", "H36M_KEYPOINT_NAME"))
        if isinstance(literals.get(var), list)
    }
    return {"descriptions": descriptions, "names": names}


def reference_keypoint_set(constants_path: str | Path, set_name: str) -> KeypointSet:
    """Our keypoint set with the reference's prompt names and descriptions (flip partners kept)."""
    ref = load_reference_constants(constants_path)
    ours = get_keypoint_set(set_name)
    ref_names = ref["names"].get(set_name, ours.names)
    if len(ref_names) != len(ours):
        raise ValueError(f"reference {set_name} list has {len(ref_names)} keypoints, ours {len(ours)}")
    by_norm = {normalize_name(n): n for n in ref_names}
    keypoints = []
    for kp in ours:
        ref_name = by_norm[normalize_name(kp.name)]
        flip = by_norm[normalize_name(kp.flip)] if kp.flip else None
        keypoints.append(Keypoint(ref_name, ref["descriptions"][ref_name], flip))
    return KeypointSet(ours.name, tuple(keypoints), ours.skeleton, ours.sigmas)


def parse_describe(spec: str) -> Keypoint:
    """``"name=description"`` (the CLI's ``--describe``) -> a Keypoint."""
    name, sep, description = spec.partition("=")
    if not sep or not name.strip() or not description.strip():
        raise ValueError(f"--describe expects 'name=description', got {spec!r}")
    return custom_keypoint(name, description)


def custom_keypoint(name: str, description: str) -> Keypoint:
    name, description = name.strip(), description.strip()
    if not name:
        raise ValueError("a custom keypoint needs a name")
    if not description:
        raise ValueError(f"custom keypoint {name!r} needs a description of where it is on the body")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(
            f"description of {name!r} is {len(description)} characters; at most {MAX_DESCRIPTION_CHARS} are allowed"
        )
    return Keypoint(name, description)


def resolve_keypoints(spec) -> KeypointSet:
    """Turn what a user asks for into a KeypointSet.

    ``spec`` is a KeypointSet, a set name (``"coco"``), or a list whose items are keypoint names we
    know (``"left knee"``, ``"neck"``), ``(name, description)`` pairs, or Keypoint objects.
    """
    if isinstance(spec, KeypointSet):
        return spec
    if isinstance(spec, str):
        if "," in spec:
            spec = [s for s in spec.split(",")]
        else:
            try:
                return get_keypoint_set(spec)
            except KeyError:
                spec = [spec]
    known = all_known_keypoints()
    keypoints = []
    for item in spec:
        if isinstance(item, Keypoint):
            keypoints.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            keypoints.append(custom_keypoint(*item))
        elif isinstance(item, str):
            kp = known.get(normalize_name(item))
            if kp is None:
                raise KeyError(
                    f"unknown keypoint {item.strip()!r}: give a description for it "
                    f"(e.g. --describe '{item.strip()}=where it is on the body')"
                )
            keypoints.append(kp)
        else:
            raise TypeError(f"cannot read a keypoint from {item!r}")
    if not keypoints:
        raise ValueError("the keypoint list is empty")
    return KeypointSet("custom", tuple(keypoints))
