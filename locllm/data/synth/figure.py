"""The SynthPose body: an articulated 3D figure with random, anatomically plausible joint angles.

A figure is built in its own frame, in millimetres: x points to the person's own left, y down,
z backwards (the person faces -z), pelvis at the origin. Seen from a camera whose frame is x right,
y down, z away from the camera, an unrotated figure faces the camera and its left side appears on
the right of the image, as a real person's does.

``JOINT_NAMES`` covers every keypoint type of the COCO, MPII, Human3.6M and extra sets by name, plus
the head centre and the hand tips that drawing needs. ``PARTS`` are the shapes a figure is drawn
from: capsules between two joints, the head sphere and the trunk's hull. Left limbs are drawn in
blues, right limbs in reds and oranges, so left and right stay apart whichever way the figure faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...keypoints import KeypointSet, normalize_name

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left hip", "right hip", "left knee", "right knee", "left ankle", "right ankle", "left toe",
    "right toe", "torso", "thorax", "neck", "head", "head top", "nose", "left eye", "right eye", "left ear",
    "right ear", "left shoulder", "right shoulder", "left elbow", "right elbow", "left wrist", "right wrist",
    "left hand", "right hand",
)
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}
FACE_JOINTS = ("nose", "left eye", "right eye", "left ear", "right ear")

DOWN = np.array([0.0, 1.0, 0.0])
FORWARD = np.array([0.0, 0.0, -1.0])
BACKWARD = -FORWARD


@dataclass(frozen=True)
class Part:
    """One drawn shape of a figure.

    ``kind`` is ``"capsule"`` (from ``joints[0]`` to ``joints[1]``, ``radius`` mm thick on each side),
    ``"sphere"`` (centred on ``joints[0]``) or ``"hull"`` (the trunk: the convex hull of
    :attr:`Figure.trunk_surface`). ``owns`` names the joints that lie on this part: a joint counts as
    visible where the pixel it projects to shows one of its own parts.
    """

    name: str
    kind: str
    joints: tuple[str, ...]
    radius: float
    owns: tuple[str, ...]


def _limb_parts(side: str) -> tuple[Part, ...]:
    return (
        Part(f"{side} upper arm", "capsule", (f"{side} shoulder", f"{side} elbow"), 48.0,
             (f"{side} shoulder", f"{side} elbow")),
        Part(f"{side} forearm", "capsule", (f"{side} elbow", f"{side} wrist"), 40.0,
             (f"{side} elbow", f"{side} wrist")),
        Part(f"{side} hand", "capsule", (f"{side} wrist", f"{side} hand"), 36.0, (f"{side} wrist", f"{side} hand")),
        Part(f"{side} thigh", "capsule", (f"{side} hip", f"{side} knee"), 70.0, (f"{side} hip", f"{side} knee")),
        Part(f"{side} shin", "capsule", (f"{side} knee", f"{side} ankle"), 52.0, (f"{side} knee", f"{side} ankle")),
        Part(f"{side} foot", "capsule", (f"{side} ankle", f"{side} toe"), 38.0, (f"{side} ankle", f"{side} toe")),
    )


HEAD_RADIUS = 105.0  # mm, before the figure's overall scale
PARTS: tuple[Part, ...] = (
    Part("trunk", "hull", (), 0.0,
         ("pelvis", "torso", "thorax", "neck", "left hip", "right hip", "left shoulder", "right shoulder")),
    Part("neck", "capsule", ("neck", "head"), 50.0, ("neck",)),
    Part("head", "sphere", ("head",), HEAD_RADIUS, ("head", "neck", "head top", *FACE_JOINTS)),
    *_limb_parts("left"),
    *_limb_parts("right"),
)

# Base colours (RGB). Every figure jitters them, but left stays blue and right stays red/orange.
_LEFT_COLORS = {"upper arm": (70, 120, 235), "forearm": (40, 85, 200), "hand": (30, 55, 150),
                "thigh": (60, 110, 220), "shin": (35, 75, 185), "foot": (25, 50, 140)}
_RIGHT_COLORS = {"upper arm": (235, 95, 50), "forearm": (205, 65, 35), "hand": (150, 40, 25),
                 "thigh": (225, 100, 45), "shin": (195, 70, 30), "foot": (140, 45, 20)}
_TRUNK_COLORS = ((90, 170, 80), (200, 190, 70), (150, 150, 150), (140, 90, 160), (120, 90, 60), (70, 160, 160),
                 (230, 230, 220), (60, 60, 60))
_SKIN_COLORS = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))
_HAIR_COLORS = ((30, 25, 20), (80, 50, 30), (150, 110, 60), (200, 180, 120), (110, 110, 110))
_LEFT_TINT, _RIGHT_TINT = np.array((40, 80, 230)), np.array((230, 50, 30))


@dataclass(frozen=True)
class Figure:
    """One posed body, in its own frame (see the module docstring).

    Attributes:
        joints: (J, 3) joint positions in mm, in ``JOINT_NAMES`` order, pelvis at the origin.
        head_rotation: (3, 3) orientation of the head in the body frame: its columns are the head's
            left, down and backward directions; the face looks along minus the third column.
        scale: overall size of this body relative to the nominal one; part radii scale with it.
        trunk_surface: (16, 3) points on the trunk's surface, mm; their projected convex hull is the
            trunk's silhouette from any viewpoint.
        colors: RGB per part name, plus ``face``, ``nose`` and ``{side} eye`` / ``{side} ear``.
    """

    joints: np.ndarray
    head_rotation: np.ndarray
    scale: float
    trunk_surface: np.ndarray
    colors: dict[str, tuple[int, int, int]]



def rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues: the rotation by ``degrees`` about the unit vector ``axis``."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _shortest_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation taking unit vector ``source`` to unit vector ``target`` along the shortest arc.

    Carrying a limb's rest frame along this arc keeps its bending direction anatomical: an arm raised
    forwards bends its elbow upwards, an arm raised sideways bends it forwards.
    """
    axis = np.cross(source, target)
    sine = np.linalg.norm(axis)
    if sine < 1e-9:  # callers keep limbs away from pointing exactly opposite to their rest direction
        return np.eye(3)
    return _rotation_about(axis / sine, np.degrees(np.arctan2(sine, float(source @ target))))


def sample_figure(rng: np.random.Generator, spread: float = 1.0) -> Figure:
    """A random body: proportions, joint angles and colours.

    Args:
        rng: the only source of randomness.
        spread: how far joint angles may go from a relaxed standing pose, 1.0 for the full
            anatomical ranges, smaller for gentler poses (the ``easy`` difficulty).
    """
    scale = rng.uniform(0.88, 1.12)

    def bone(mm: float) -> float:
        return mm * scale * rng.uniform(0.94, 1.06)

    joints: dict[str, np.ndarray] = {"pelvis": np.zeros(3)}
    hip_half_width, lower_spine, upper_spine, neck_length = bone(95), bone(230), bone(210), bone(80)
    shoulder_half_width = bone(175)

    spine = (rotation_y(spread * rng.uniform(-30, 30)) @ rotation_z(spread * rng.uniform(-15, 15))
             @ rotation_x(spread * rng.uniform(-12, 40)))  # twist, side bend, forward lean about the pelvis
    joints["torso"] = spine @ np.array([0.0, -lower_spine, 0.0])
    joints["thorax"] = spine @ np.array([0.0, -(lower_spine + upper_spine), 0.0])
    joints["neck"] = spine @ np.array([0.0, -(lower_spine + upper_spine + neck_length), 0.0])

    head_rotation = (spine @ rotation_y(spread * rng.uniform(-50, 50)) @ rotation_x(spread * rng.uniform(-25, 30))
                     @ rotation_z(spread * rng.uniform(-15, 15)))
    joints["head"] = joints["neck"] + head_rotation @ np.array([0.0, -bone(110), -10.0 * scale])
    r = HEAD_RADIUS * scale
    # Face points sit just inside the head sphere so that every one of them is covered by its drawing.
    for name, offset in (("head top", (0.0, -r, 0.0)), ("nose", (0.0, 0.15 * r, -0.95 * r)),
                         ("left eye", (0.32 * r, -0.12 * r, -0.88 * r)), ("right eye", (-0.32 * r, -0.12 * r, -0.88 * r)),
                         ("left ear", (0.95 * r, 0.05 * r, 0.05 * r)), ("right ear", (-0.95 * r, 0.05 * r, 0.05 * r))):
        joints[name] = joints["head"] + head_rotation @ np.array(offset)

    shoulder_height = lower_spine + upper_spine
    for side, sign in (("left", 1.0), ("right", -1.0)):
        joints[f"{side} shoulder"] = spine @ np.array([sign * shoulder_half_width, -shoulder_height, 0.0])
        _sample_arm(rng, spread, side, sign, spine, joints, bone)
        joints[f"{side} hip"] = np.array([sign * hip_half_width, 5.0 * scale, 0.0])
        _sample_leg(rng, spread, side, sign, joints, bone)

    trunk_surface = _trunk_surface(spine, hip_half_width, shoulder_half_width, shoulder_height, scale)
    return Figure(
        joints=np.stack([joints[name] for name in JOINT_NAMES]),
        head_rotation=head_rotation,
        scale=scale,
        trunk_surface=trunk_surface,
        colors=_sample_colors(rng),
    )


def _sample_arm(rng, spread, side, sign, spine, joints, bone) -> None:
    # Direction of the upper arm: elevation from hanging down, in a vertical plane from slightly
    # behind the body (-30 deg) through sideways (0) to forwards (90) and across the chest (110).
    elevation = spread * 170.0 * rng.beta(1.3, 2.2)
    plane = np.radians(rng.uniform(-30, 110))
    horizontal = np.array([sign * np.cos(plane), 0.0, -np.sin(plane)])
    upper = np.cos(np.radians(elevation)) * DOWN + np.sin(np.radians(elevation)) * horizontal
    bend = _shortest_rotation(DOWN, upper) @ FORWARD  # where the hand goes when the elbow flexes
    bend = _rotation_about(upper, sign * spread * rng.uniform(-40, 60)) @ bend  # rotation of the upper arm
    elbow_flexion = np.radians(spread * 150.0 * rng.beta(1.4, 2.2))
    wrist_flexion = np.radians(spread * rng.uniform(-20, 35))
    forearm = np.cos(elbow_flexion) * upper + np.sin(elbow_flexion) * bend
    hand = np.cos(elbow_flexion + wrist_flexion) * upper + np.sin(elbow_flexion + wrist_flexion) * bend
    joints[f"{side} elbow"] = joints[f"{side} shoulder"] + spine @ (bone(290) * upper)
    joints[f"{side} wrist"] = joints[f"{side} elbow"] + spine @ (bone(260) * forearm)
    joints[f"{side} hand"] = joints[f"{side} wrist"] + spine @ (bone(100) * hand)


def _sample_leg(rng, spread, side, sign, joints, bone) -> None:
    flexion = spread * (-20.0 + 130.0 * rng.beta(1.2, 3.5))  # thigh forwards (negative: backwards)
    abduction = spread * (-8.0 + 48.0 * rng.beta(1.3, 3.0))  # thigh outwards
    thigh = rotation_z(-sign * abduction) @ rotation_x(-flexion) @ DOWN
    bend = _shortest_rotation(DOWN, thigh) @ BACKWARD  # where the shin goes when the knee flexes
    bend = _rotation_about(thigh, sign * spread * rng.uniform(-20, 20)) @ bend
    # A raised thigh usually comes with a bent knee (sitting, climbing, kneeling).
    knee_flexion = np.radians(min(150.0, spread * (140.0 * rng.beta(1.2, 3.0) + 0.5 * max(flexion, 0.0))))
    shin = np.cos(knee_flexion) * thigh + np.sin(knee_flexion) * bend
    behind_shin = -np.sin(knee_flexion) * thigh + np.cos(knee_flexion) * bend
    # The foot points forwards, roughly square to the shin; plantar flexion tips the toe down.
    plantar_flexion = np.radians(25.0 + spread * rng.uniform(-20, 25))
    foot = np.cos(plantar_flexion) * -behind_shin + np.sin(plantar_flexion) * shin
    joints[f"{side} knee"] = joints[f"{side} hip"] + bone(430) * thigh
    joints[f"{side} ankle"] = joints[f"{side} knee"] + bone(420) * shin
    joints[f"{side} toe"] = joints[f"{side} ankle"] + bone(150) * foot


def _trunk_surface(spine, hip_half_width, shoulder_half_width, shoulder_height, scale) -> np.ndarray:
    """Two elliptical rings: round the hips (fixed to the pelvis) and round the shoulders (moving with the spine)."""
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    ring = np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], axis=1)  # (8, 3)
    hips = ring * np.array([hip_half_width + 55.0 * scale, 0.0, 95.0 * scale]) + np.array([0.0, 40.0 * scale, 0.0])
    shoulders = ring * np.array([shoulder_half_width + 15.0 * scale, 0.0, 100.0 * scale])
    shoulders = (shoulders + np.array([0.0, -shoulder_height - 25.0 * scale, 0.0])) @ spine.T
    return np.concatenate([hips, shoulders])


def _jitter(rng: np.random.Generator, color, amount: int = 20) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.asarray(color) + rng.integers(-amount, amount + 1, 3), 0, 255))


def _sample_colors(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    colors = {}
    for side, table in (("left", _LEFT_COLORS), ("right", _RIGHT_COLORS)):
        for part, base in table.items():
            colors[f"{side} {part}"] = _jitter(rng, base)
    colors["trunk"] = _jitter(rng, _TRUNK_COLORS[rng.integers(len(_TRUNK_COLORS))])
    skin = np.array(_jitter(rng, _SKIN_COLORS[rng.integers(len(_SKIN_COLORS))], 10))
    colors["head"] = _jitter(rng, _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))], 10)  # hair: the back of the head
    colors["neck"] = colors["face"] = tuple(int(c) for c in skin)
    colors["nose"] = tuple(int(c) for c in skin * 0.75)
    colors["left ear"] = tuple(int(c) for c in (skin + _LEFT_TINT) // 2)
    colors["right ear"] = tuple(int(c) for c in (skin + _RIGHT_TINT) // 2)
    colors["left eye"], colors["right eye"] = tuple(int(c) for c in _LEFT_TINT), tuple(int(c) for c in _RIGHT_TINT)
    return colors


def joint_indices(keypoint_set: KeypointSet) -> np.ndarray:
    """Indices into ``JOINT_NAMES`` of each keypoint of ``keypoint_set``, in its order.

    Raises:
        KeyError: the set holds a keypoint type the SynthPose body does not model.
    """
    indices = []
    for name in keypoint_set.names:
        normalized = normalize_name(name)
        if normalized not in JOINT_INDEX:
            raise KeyError(f"SynthPose figures have no {name!r} keypoint (they have: {', '.join(JOINT_NAMES)})")
        indices.append(JOINT_INDEX[normalized])
    return np.array(indices)
