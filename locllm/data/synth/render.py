"""Drawing SynthPose scenes: a textured background, distractor shapes and posed figures, with exact labels.

One camera per image (see :mod:`.camera`); every figure stands upright in the world and all in-plane
rotation comes from the camera's roll, so the 3D labels stay physically consistent. Parts are drawn
far to near (painter's order, figure by figure) into the RGB image and into a label map of
``1 + 16 * figure + part``; a keypoint is visible (v=2) where the pixel it projects to shows one of
the parts it lies on, occluded (v=1) where something else covers it, and unlabelled (v=0) outside
the image. Face points (nose, eyes, ears) also need to face the camera to count as visible.

Coordinates are continuous pixel positions with pixel centres at integers (OpenCV's drawing
convention); "inside the image" means ``0 <= x <= W - 1`` and ``0 <= y <= H - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, H36M_KEYPOINTS, MPII_KEYPOINTS
from ..camera import PinholeCamera
from .figure import (
    HEAD_RADIUS,
    JOINT_INDEX,
    JOINT_NAMES,
    PARTS,
    Figure,
    joint_indices,
    rotation_x,
    rotation_y,
    rotation_z,
    sample_figure,
)

MAX_PERSONS = 15  # the uint8 label map holds 16 part labels per figure
_SHIFT = 4  # OpenCV draws at 1/16 pixel precision, so figures in 64 px crops stay where their labels say
_ONE = 1 << _SHIFT
_STANDING_HEIGHT_MM = 1800.0
_OWNERS = {name: [i for i, part in enumerate(PARTS) if name in part.owns] for name in JOINT_NAMES}
_VIEWS = {"keypoints": COCO_KEYPOINTS, "extra_keypoints": EXTRA_KEYPOINTS, "mpii_joints": MPII_KEYPOINTS,
          "h36m_joints": H36M_KEYPOINTS}
_VIEW_INDICES = {key: joint_indices(keypoint_set) for key, keypoint_set in _VIEWS.items()}
_H36M_INDICES = _VIEW_INDICES["h36m_joints"]


@dataclass(frozen=True)
class Difficulty:
    """How hard the scenes are. Angles in degrees; sizes as fractions of the image side.

    Attributes:
        pose_spread: joint angle ranges relative to the full anatomical ones (see ``sample_figure``).
        facing: range of a figure's turn away from facing the camera (0: facing it, 180: its back).
        roll, wide_roll, wide_roll_prob: in-plane rotation is within +-``roll``, or with probability
            ``wide_roll_prob`` within +-``wide_roll``.
        truncation_prob: chance that a figure is pushed towards the border so that the image cuts it.
        single_fill, multi_fill: range of the longer side of a figure's box, alone and among others.
        center_jitter: how far a lone figure's centre strays from the image centre.
        distractors: range of the number of background shapes.
        noise_sigma: range of the standard deviation of the pixel noise, in grey levels.
        blur_prob: chance of a slight Gaussian blur.
    """

    name: str
    pose_spread: float
    facing: tuple[float, float]
    roll: float
    wide_roll: float
    wide_roll_prob: float
    truncation_prob: float
    single_fill: tuple[float, float]
    multi_fill: tuple[float, float]
    center_jitter: float
    distractors: tuple[int, int]
    noise_sigma: tuple[float, float]
    blur_prob: float


DIFFICULTIES = {
    # The demo's setting: a tiny model learns it in CPU minutes (see locllm/assets/demo/TRAINING.md).
    "easy": Difficulty("easy", pose_spread=0.6, facing=(-70.0, 70.0), roll=10.0, wide_roll=10.0, wide_roll_prob=0.0,
                       truncation_prob=0.0, single_fill=(0.8, 0.95), multi_fill=(0.5, 0.8), center_jitter=0.05,
                       distractors=(1, 4), noise_sigma=(2.0, 5.0), blur_prob=0.1),
    "normal": Difficulty("normal", pose_spread=1.0, facing=(-180.0, 180.0), roll=12.0, wide_roll=45.0,
                         wide_roll_prob=0.25, truncation_prob=0.25, single_fill=(0.7, 0.95), multi_fill=(0.4, 0.85),
                         center_jitter=0.1, distractors=(4, 12), noise_sigma=(3.0, 9.0), blur_prob=0.3),
}


def get_difficulty(name: str) -> Difficulty:
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {name!r}; known: {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[name]


def render_scene(
    rng: np.random.Generator, size: int = 256, num_persons: int = 1, difficulty: str = "normal",
    part_labels: bool = False,
) -> tuple[np.ndarray, list[dict]] | tuple[np.ndarray, list[dict], np.ndarray]:
    """Render one SynthPose image and label every figure in it.

    Args:
        rng: the only source of randomness: the same generator state gives the same scene.
        size: the image is ``size`` x ``size`` pixels.
        num_persons: figures in the scene (1 .. ``MAX_PERSONS``). A lone figure fills most of the
            image, as in a top-down person crop.
        difficulty: a key of ``DIFFICULTIES``.
        part_labels: also return which body part each pixel shows (the same scene: no randomness is
            spent on it).

    Returns:
        ``(image, persons)``: ``image`` is (size, size, 3) uint8 RGB. Each person is a dict of:

        - ``joints``: (J, 3) x, y, v of every joint of ``JOINT_NAMES`` (v: 0 outside the image,
          1 occluded, 2 visible); x, y are the exact projection even where v is 0;
        - ``joints_camera``, ``joints_world``: (J, 3) the same joints in mm (see :mod:`.camera`);
        - the same selected per keypoint set: ``keypoints`` (17, 3) COCO, ``extra_keypoints``
          (6, 3) EXTRA_KEYPOINTS (neck, pelvis, head top, thorax, toes), ``mpii_joints`` (16, 3),
          ``h36m_joints`` (17, 3) in pixels, and ``joints_3d_camera`` / ``joints_3d_world``
          (17, 3) in Human3.6M order, mm;
        - ``bbox``: (4,) x, y, w, h in whole pixels: the figure as drawn alone, clipped to the
          image; it holds every keypoint with v > 0;
        - ``area``: pixels of the figure as drawn alone, inside the image;
        - ``head_box``: (4,) x1, y1, x2, y2 of the head (MPII's head box, for PCKh);
        - ``camera``: the image's :class:`PinholeCamera` (shared by all its persons).

        With ``part_labels``, a third element: the (size, size) uint8 map of the part each pixel shows,
        0 for none, else ``1 + 16 * person + i`` for ``PARTS[i]`` (the nearest part, outline included).
    """
    if size < 32:
        raise ValueError(f"SynthPose images must be at least 32 px wide, got size={size}")
    if not 1 <= num_persons <= MAX_PERSONS:
        raise ValueError(f"num_persons must be between 1 and {MAX_PERSONS}, got {num_persons}")
    preset = get_difficulty(difficulty)

    roll_range = preset.wide_roll if rng.random() < preset.wide_roll_prob else preset.roll
    roll, pitch, camera_yaw = rng.uniform(-roll_range, roll_range), rng.uniform(-10, 25), rng.uniform(-180, 180)
    focal = size * rng.uniform(1.1, 1.8)
    principal_point = (size - 1) / 2 + rng.uniform(-0.02, 0.02, 2) * size
    view = rotation_z(roll) @ rotation_x(pitch)  # the camera's roll and tilt; figures add their own turn

    figures = [sample_figure(rng, preset.pose_spread) for _ in range(num_persons)]
    joints_camera, orientations = [], []
    for figure, (center, extent) in zip(figures, _layout(rng, size, num_persons, preset), strict=True):
        orientation = view @ rotation_y(rng.uniform(*preset.facing))  # body frame -> camera frame
        relative = figure.joints @ orientation.T
        root = _place(relative, focal, principal_point, center, extent, margin_mm=90.0 * figure.scale)
        joints_camera.append(relative + root)
        orientations.append(orientation)

    # The world: y down, the first figure's pelvis at height 0 near the origin, the camera wherever it
    # must be to see that pelvis where the layout put it. A figure turned by `turn` towards the camera
    # stands upright in the world, turned by turn - camera_yaw: R @ Ry(turn - camera_yaw) = view @ Ry(turn).
    rotation = view @ rotation_y(camera_yaw)
    first_root_world = np.array([rng.uniform(-1000, 1000), 0.0, rng.uniform(-1000, 1000)])
    camera = PinholeCamera(R=rotation, t=first_root_world - rotation.T @ joints_camera[0][JOINT_INDEX["pelvis"]],
                           f=np.array([focal, focal]), c=principal_point)

    image = _background(rng, size, preset)
    labels = np.zeros((size, size), np.uint8)
    outline = max(1, round(size / 256))
    far_to_near = np.argsort([-points[JOINT_INDEX["pelvis"], 2] for points in joints_camera], kind="stable")
    drawn = {int(slot): _draw_figure(image, labels, slot, figures[slot], joints_camera[slot], orientations[slot],
                                     camera, outline) for slot in far_to_near}

    # Uniform pixel noise of the drawn standard deviation: integer draws are several times cheaper
    # than Gaussian ones, and at this amplitude the eye cannot tell them apart.
    half_width = round(rng.uniform(*preset.noise_sigma) * np.sqrt(3))
    noise = rng.integers(-half_width, half_width + 1, image.shape, dtype=np.int16)
    image = cv2.add(image, noise, dtype=cv2.CV_8U)
    if rng.random() < preset.blur_prob:
        image = cv2.GaussianBlur(image, (3, 3), 0)

    persons = [_label_person(slot, figures[slot], joints_camera[slot], orientations[slot], camera, labels,
                             *drawn[slot]) for slot in range(num_persons)]
    return (image, persons, labels) if part_labels else (image, persons)


def _layout(rng, size, num_persons, preset) -> list[tuple[np.ndarray, float]]:
    """Where each figure's box centre goes (pixels) and how long the box's longer side is."""
    placements = []
    if num_persons == 1:
        center = (size - 1) / 2 + rng.uniform(-1, 1, 2) * preset.center_jitter * size
        placements.append((center, rng.uniform(*preset.single_fill) * size))
    else:
        # One column each, in random order, jittered so that neighbours sometimes overlap.
        crowding = min(1.0, 3.0 / num_persons)
        for column in rng.permutation(num_persons):
            x = (column + 0.5 + rng.uniform(-0.35, 0.35)) * size / num_persons
            y = (size - 1) / 2 + rng.uniform(-0.15, 0.15) * size
            placements.append((np.array([x, y]), rng.uniform(*preset.multi_fill) * size * crowding))
    shifted = []
    for center, extent in placements:
        if rng.random() < preset.truncation_prob:  # pushed towards the border, to be cut by it
            angle = rng.uniform(0, 2 * np.pi)
            center = center + rng.uniform(0.2, 0.45) * extent * np.array([np.cos(angle), np.sin(angle)])
        # The box centre stays inside, so part of every figure is in view.
        shifted.append((np.clip(center, 0.1 * size, 0.9 * size), extent))
    return shifted


def _place(relative, focal, principal_point, center, extent, margin_mm) -> np.ndarray:
    """The root position (camera frame, mm) that puts a figure's box of side ``extent`` px at ``center``.

    ``relative`` is (J, 3): joints in camera axes relative to the root. Sizes scale as 1/depth, so one
    trial projection gives the depth; the shift that centres the box then follows at that depth.
    """
    trial_depth = focal * _STANDING_HEIGHT_MM / extent
    trial = relative[:, :2] / (relative[:, 2:3] + trial_depth) * focal
    trial_extent = np.ptp(trial, axis=0).max() + 2 * focal * margin_mm / trial_depth
    # Keep every joint at least a metre from the camera, so perspective never turns grotesque.
    depth = max(trial_depth * trial_extent / extent, 1000.0 - relative[:, 2].min())
    projected = relative[:, :2] / (relative[:, 2:3] + depth) * focal + principal_point
    box_center = (projected.min(0) + projected.max(0)) / 2
    shift = (center - box_center) * depth / focal
    return np.array([shift[0], shift[1], depth])


def _background(rng, size, preset) -> np.ndarray:
    """A colour ramp with smooth noise texture and random shapes: (size, size, 3) uint8."""
    # Ramp and texture are smooth, so they are made on a coarse grid and upsampled in one resize.
    grid = int(rng.integers(3, 17))
    angle = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(0.0, 1.0, grid)
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = rng.uniform(0, 255, (2, 3))
    coarse = start + ramp[..., None] * (end - start) + rng.uniform(10, 45) * rng.standard_normal((grid, grid, 3))
    image = cv2.resize(np.clip(coarse, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(preset.distractors[0], preset.distractors[1] + 1))):
        _draw_distractor(rng, image)
    return image


def _draw_distractor(rng, image) -> None:
    size = image.shape[0]
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    center = _fixed(rng.uniform(0, size, 2))
    kind = rng.integers(4)
    if kind == 0:
        thickness = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        cv2.circle(image, center, int(rng.uniform(0.02, 0.15) * size * _ONE), color, thickness, cv2.LINE_AA, _SHIFT)
    elif kind == 1:
        axes = _fixed(rng.uniform(0.02, 0.15, 2) * size)
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0.0, 360.0, color, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 2:
        half = rng.uniform(0.02, 0.15, 2) * size
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        angle = rng.uniform(0, np.pi)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = corners @ turn.T + rng.uniform(0, size, 2)
        cv2.fillConvexPoly(image, _fixed(corners), color, cv2.LINE_AA, _SHIFT)
    else:  # limb-like bars, the hardest distractors
        end = _fixed(rng.uniform(0, size, 2))
        thickness = max(1, int(rng.uniform(0.005, 0.05) * size))
        cv2.line(image, center, end, color, thickness, cv2.LINE_AA, _SHIFT)


def _fixed(points) -> np.ndarray | tuple[int, int]:
    """Pixel positions as OpenCV's fixed-point integers (see ``_SHIFT``); one point becomes a tuple."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        return round(float(points[0]) * _ONE), round(float(points[1]) * _ONE)
    return np.round(points * _ONE).astype(np.int32)


def _figure_shapes(figure: Figure, joints_camera, orientation, camera) -> list[tuple[float, int, tuple]]:
    """(depth, part index, shape) of every part; shapes in pixels, ready for ``_draw_shape``."""
    pixels = camera.project(joints_camera)
    shapes = []
    for index, part in enumerate(PARTS):
        if part.kind == "hull":
            surface = (figure.trunk_surface @ orientation.T) + joints_camera[JOINT_INDEX["pelvis"]]
            hull = cv2.convexHull(_fixed(camera.project(surface)))
            shapes.append((float(surface[:, 2].mean()), index, ("hull", hull)))
            continue
        ends = [JOINT_INDEX[name] for name in part.joints]
        depth = float(joints_camera[ends, 2].mean())
        radius = camera.f[0] * part.radius * figure.scale / depth
        if part.kind == "sphere":
            shapes.append((depth, index, ("circle", pixels[ends[0]], radius)))
        else:
            shapes.append((depth, index, ("capsule", pixels[ends[0]], pixels[ends[1]], radius)))
    return shapes


def _draw_shape(canvas, shape, color, grow: int, line_type: int) -> None:
    """Draw one shape, ``grow`` pixels larger all round (the outline)."""
    if shape[0] == "hull":
        cv2.fillConvexPoly(canvas, shape[1], color, line_type, _SHIFT)
        if grow:
            cv2.polylines(canvas, [shape[1]], True, color, 2 * grow, line_type, _SHIFT)
    elif shape[0] == "circle":
        cv2.circle(canvas, _fixed(shape[1]), max(1, round((shape[2] + grow) * _ONE)), color, -1, line_type, _SHIFT)
    else:
        thickness = max(1, round(2 * (shape[3] + grow)))
        cv2.line(canvas, _fixed(shape[1]), _fixed(shape[2]), color, thickness, line_type, _SHIFT)


def _draw_figure(image, labels, slot, figure, joints_camera, orientation, camera, outline):
    """Draw one figure far part to near part; return its own mask (drawn alone) and its box there."""
    mask = np.zeros(labels.shape, np.uint8)
    root_depth = joints_camera[JOINT_INDEX["pelvis"], 2]
    shapes = sorted(_figure_shapes(figure, joints_camera, orientation, camera), key=lambda s: (-s[0], s[1]))
    for depth, index, shape in shapes:
        part = PARTS[index]
        # Nearer parts are a little brighter, so limbs crossing in front of each other stay apart.
        shade = 1.0 - 0.15 * min(1.0, max(-1.0, (depth - root_depth) / (400.0 * figure.scale)))
        color = tuple(min(255.0, c * shade) for c in figure.colors[part.name])
        _draw_shape(image, shape, tuple(0.45 * c for c in color), outline, cv2.LINE_AA)
        _draw_shape(image, shape, color, 0, cv2.LINE_AA)
        _draw_shape(labels, shape, 1 + 16 * int(slot) + index, outline, cv2.LINE_8)
        _draw_shape(mask, shape, 1, outline, cv2.LINE_8)
        if part.name == "head":
            _draw_face(image, figure, joints_camera, orientation, camera)
    return mask.sum(dtype=np.int64), _mask_box(mask)


def _facing_camera(point, normal) -> float:
    """Cosine between a surface normal and the direction from the surface point to the camera."""
    return float(-normal @ point / np.linalg.norm(point))


_FACE_THRESHOLDS = {"nose": 0.1, "left eye": 0.2, "right eye": 0.2, "left ear": -0.25, "right ear": -0.25}


def _face_visibility(joints_camera, head_axes) -> dict[str, bool]:
    """Whether each face point turns towards the camera (the head itself would hide it otherwise)."""
    head = joints_camera[JOINT_INDEX["head"]]
    facing = {}
    for name, threshold in _FACE_THRESHOLDS.items():
        point = joints_camera[JOINT_INDEX[name]]
        normal = -head_axes[:, 2] if name == "nose" else (point - head) / np.linalg.norm(point - head)
        facing[name] = _facing_camera(point, normal) > threshold
    return facing


def _draw_face(image, figure, joints_camera, orientation, camera) -> None:
    head_axes = orientation @ figure.head_rotation
    head = joints_camera[JOINT_INDEX["head"]]
    radius_mm = HEAD_RADIUS * figure.scale
    face_center = head + head_axes @ np.array([0.0, 0.1, -0.3]) * radius_mm
    if _facing_camera(face_center, -head_axes[:, 2]) > -0.25:
        _draw_dot(image, camera, face_center, 0.7 * radius_mm, figure.colors["face"])
    for name, visible in _face_visibility(joints_camera, head_axes).items():
        if visible:
            relative_size = 0.2 if name.endswith("ear") else 0.13
            _draw_dot(image, camera, joints_camera[JOINT_INDEX[name]], relative_size * radius_mm, figure.colors[name])


def _draw_dot(image, camera, point, radius_mm, color) -> None:
    center = camera.project(point[None])[0]
    radius = max(1, round(camera.f[0] * radius_mm / point[2] * _ONE))
    cv2.circle(image, _fixed(center), radius, tuple(float(c) for c in color), -1, cv2.LINE_AA, _SHIFT)


def _mask_box(mask) -> tuple[int, int, int, int] | None:
    """x1, y1, x2, y2 (exclusive) of the mask's pixels, or None when it is empty."""
    columns, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if columns.size == 0:
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _label_person(slot, figure, joints_camera, orientation, camera, labels, area, mask_box) -> dict:
    size = labels.shape[0]
    pixels = camera.project(joints_camera)
    inside = np.all((pixels >= 0) & (pixels <= size - 1), axis=1)
    facing = _face_visibility(joints_camera, orientation @ figure.head_rotation)
    visibility = np.zeros(len(JOINT_NAMES))
    for j, name in enumerate(JOINT_NAMES):
        if not inside[j]:
            continue
        x, y = np.round(pixels[j]).astype(int)
        shown = labels[y, x]
        own = shown == 0 or (shown - 1) // 16 == slot and (shown - 1) % 16 in _OWNERS[name]
        visibility[j] = 2 if own and facing.get(name, True) else 1

    # The box of the figure drawn alone, grown to hold every labelled keypoint, in whole pixels.
    labelled = pixels[visibility > 0]
    corners = [np.array(mask_box).reshape(2, 2)] if mask_box else []
    if len(labelled):
        corners.append(np.stack([np.floor(labelled.min(0)), np.ceil(labelled.max(0))]))
    if corners:
        stacked = np.concatenate(corners)
        x1, y1 = np.clip(stacked.min(0), 0, size)
        x2, y2 = np.clip(stacked.max(0), 0, size)
    else:
        x1 = y1 = x2 = y2 = 0.0

    head = joints_camera[JOINT_INDEX["head"]]
    head_radius = camera.f[0] * HEAD_RADIUS * figure.scale / head[2]
    head_center = pixels[JOINT_INDEX["head"]]
    joints = np.concatenate([pixels, visibility[:, None]], axis=1)
    joints_world = camera.camera_to_world(joints_camera)
    person = {
        "joints": joints,
        "joints_camera": joints_camera,
        "joints_world": joints_world,
        **{key: joints[indices] for key, indices in _VIEW_INDICES.items()},
        "joints_3d_camera": joints_camera[_H36M_INDICES],
        "joints_3d_world": joints_world[_H36M_INDICES],
        "bbox": np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float64),
        "area": float(area),
        "head_box": np.concatenate([head_center - head_radius, head_center + head_radius]),
        "camera": camera,
    }
    return person
