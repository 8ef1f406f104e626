"""Keypoints the user brings: custom (name, description) pairs, description files, the reference table.

The reference implementation keeps its descriptions in ``datasets/constants.py``. To prompt an
imported reference checkpoint with byte-identical text we read that file *as data*: the
module is parsed with ``ast`` and only literal assignments are evaluated; nothing is executed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

from ..bounds import MAX_KEYPOINT_NAME_CHARS, MAX_KEYPOINTS, check_text
from .sets import Keypoint, KeypointSet, all_known_keypoints, get_keypoint_set, normalize_name

MAX_DESCRIPTION_CHARS = 600  # a sentence; anything longer would crowd out the image in the context


def load_description_file(path: str | Path) -> dict[str, str]:
    """Read ``{name: description}`` from a JSON or YAML keypoint table (see :func:`load_keypoint_table`), or
    from a reference ``constants.py``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"description file not found: {path}")
    if path.suffix == ".py":
        return load_reference_constants(path)["descriptions"]
    return {keypoint.name: keypoint.description for keypoint in load_keypoint_table(path)}


_FLIP_FROM_NAME = object()  # an entry without a "flip" key: its partner follows from a left/right name


def load_keypoint_table(path: str | Path) -> KeypointSet:
    """A user's keypoints, in the order their annotations list them, from a JSON or YAML table.

    The table is either an ordered list of entries ``{name, description, flip}`` (``flip``: the name of the
    mirror-image partner, ``null`` for none) or a mapping ``name: description``. An entry without a ``flip``
    key, and every entry of a mapping, takes "right X" as the partner of "left X" (and the reverse) when both
    are in the table: horizontal-flip augmentation swaps partners, and a left/right pair left unswapped would
    teach the model the wrong side. The set is named after the file (``extra_keypoints.yaml``:
    ``extra_keypoints``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint table not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    entries = _table_entries(data, path)
    by_name: dict[str, str] = {}
    for name, _, _ in entries:
        if normalize_name(name) in by_name:
            raise ValueError(f"{path}: keypoint {name!r} is listed twice")
        by_name[normalize_name(name)] = name.strip()
    keypoints = []
    for name, description, flip in entries:
        if flip is _FLIP_FROM_NAME:
            flip = by_name.get(_mirrored_name(normalize_name(name)))
        elif flip is not None:
            if normalize_name(flip) not in by_name:
                raise ValueError(f"{path}: the flip partner {flip!r} of {name!r} is not in the table")
            flip = by_name[normalize_name(flip)]
        keypoints.append(replace(custom_keypoint(name, description), flip=flip))
    partner_of = {normalize_name(kp.name): kp.flip for kp in keypoints}
    for kp in keypoints:
        if kp.flip is None:
            continue
        partners_partner = partner_of[normalize_name(kp.flip)]
        if partners_partner is None or normalize_name(partners_partner) != normalize_name(kp.name):
            raise ValueError(f"{path}: {kp.name!r} names {kp.flip!r} as its flip partner, but {kp.flip!r} does "
                             "not name it back")
    return KeypointSet(path.stem, tuple(keypoints))


def _table_entries(data, path: Path) -> list[tuple[str, str, object]]:
    """(name, description, flip or ``_FLIP_FROM_NAME``) of each entry of a keypoint table, in order."""
    shape = (f"{path}: a keypoint table is a list of {{name, description, flip}} entries or a mapping of "
             "keypoint name -> description")
    if isinstance(data, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(shape + " (strings)")
        return _bounded([(name, description, _FLIP_FROM_NAME) for name, description in data.items()], path)
    if not isinstance(data, list) or not data:
        raise ValueError(shape)
    entries = []
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or set(entry) - {"name", "description", "flip"}:
            raise ValueError(f"{shape}; entry {number} is {entry!r:.200}")
        name, description = entry.get("name"), entry.get("description")
        flip = entry.get("flip") if "flip" in entry else _FLIP_FROM_NAME
        if not isinstance(name, str) or not isinstance(description, str) or not (
                flip is None or flip is _FLIP_FROM_NAME or isinstance(flip, str)):
            raise ValueError(f"{path}: entry {number} needs a name and a description (strings) and, if it has one, "
                             f"a flip partner's name; got {entry!r:.200}")
        entries.append((name, description, flip))
    return _bounded(entries, path)


def _bounded(entries: list[tuple[str, str, object]], path: Path) -> list[tuple[str, str, object]]:
    """The entries of a table, if it holds at most MAX_KEYPOINTS, names and descriptions within their limits."""
    if len(entries) > MAX_KEYPOINTS:
        raise ValueError(f"{path}: {len(entries):,} keypoints; at most {MAX_KEYPOINTS:,} are allowed in one table")
    for name, description, _ in entries:
        try:
            check_text("a keypoint name", name, MAX_KEYPOINT_NAME_CHARS)
            check_text(f"the description of {name!r}", description, MAX_DESCRIPTION_CHARS)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return entries


def load_checkpoint_descriptions(path: str | Path) -> dict[str, str]:
    """A checkpoint's ``descriptions.json`` (a keypoint table, see :func:`load_keypoint_table`) as
    ``{name: description}``, within the bounds of every table; a file that is not one is a ValueError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): fix or remove it") from None
    return {name: description for name, description, _ in _table_entries(data, path)}


def _mirrored_name(normalized: str) -> str | None:
    side, _, part = normalized.partition(" ")
    mirror = {"left": "right", "right": "left"}.get(side)
    return f"{mirror} {part}" if mirror and part else None


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


def resolve_keypoints(spec, known: dict[str, Keypoint] | None = None) -> KeypointSet:
    """Turn what a user asks for into a KeypointSet.

    ``spec`` is a KeypointSet, a set name (``"coco"``), or a list whose items are keypoint names we
    know (``"left knee"``, ``"neck"``), ``(name, description)`` pairs, or Keypoint objects. ``known`` adds
    keypoints that may be asked by name alone (by normalized name; e.g. those a checkpoint was trained on);
    a built-in keypoint of the same name comes first.
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
    known = {**(known or {}), **all_known_keypoints()}
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
