"""Human3.6M 3D pose error: root-relative MPJPE and PA-MPJPE in millimetres (protocol 2: S9, S11).

The model answers each joint as image position + depth relative to the root (pelvis, joint 0).
:func:`image_to_camera` turns that into camera coordinates as the reference (``utils/valid3d.py``)
does: the ground-truth root depth is added and the point is back-projected with the ground-truth
camera. :func:`evaluate_h36m` then compares root-relative poses, before and after a Procrustes
alignment (:func:`procrustes_align`). All 17 joints are evaluated, the root included, as in the
reference: its root-relative error is 0 by construction, so MPJPE is 16/17 of the 16-joint mean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..data.camera import back_project

# Human3.6M's actions, numbered 2..16 in its file names ("act_02" is Directions).
H36M_ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Posing", "Purchases", "Sitting",
                "SittingDown", "Smoking", "Photo", "Waiting", "Walking", "WalkDog", "WalkTogether")
FIRST_ACTION_NUMBER = 2
ROOT_INDEX = 0  # pelvis


def action_from_file_name(file_name: str) -> str:
    """The action of a frame from its file name, e.g. ``s_09_act_02_subact_01_ca_01/...png`` -> Directions."""
    match = re.search(r"act_(\d+)", file_name)
    if match is None:
        raise ValueError(f"no 'act_NN' in Human3.6M file name {file_name!r}")
    number = int(match.group(1))
    if not FIRST_ACTION_NUMBER <= number < FIRST_ACTION_NUMBER + len(H36M_ACTIONS):
        raise ValueError(f"action number {number} in {file_name!r} is not a Human3.6M action (2..16)")
    return H36M_ACTIONS[number - FIRST_ACTION_NUMBER]


def image_to_camera(
    image_xy: np.ndarray,
    root_relative_depth: np.ndarray,
    root_depth: float | np.ndarray,
    focal: np.ndarray,
    principal_point: np.ndarray,
    root_index: int | None = ROOT_INDEX,
) -> np.ndarray:
    """Back-project image positions with depths relative to the root into camera coordinates.

    Args:
        image_xy: (..., J, 2) joint positions in image pixels (already mapped back from the crop).
        root_relative_depth: (..., J) depth of each joint minus the root's, in mm.
        root_depth: (...) the ground-truth depth of the root joint in mm.
        focal: (..., 2) focal lengths fx, fy in pixels.
        principal_point: (..., 2) cx, cy in pixels.
        root_index: this joint's relative depth is set to 0, as the reference does: whatever the
            model answered for the root's depth, the root sits at the ground-truth depth. None
            keeps the given depths.

    Returns:
        (..., J, 3) x, y, z in the camera frame, mm.
    """
    image_xy = np.asarray(image_xy, dtype=np.float64)
    relative = np.array(root_relative_depth, dtype=np.float64)  # a copy: the root is overwritten below
    if relative.shape != image_xy.shape[:-1]:
        raise ValueError(f"root_relative_depth has shape {relative.shape}, expected {image_xy.shape[:-1]}")
    if root_index is not None:
        relative[..., root_index] = 0.0
    depth = relative + np.asarray(root_depth, dtype=np.float64)[..., None]  # (..., J)
    return back_project(image_xy, depth, focal, principal_point)


def procrustes_align(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform (scale, rotation, translation) of ``predicted`` closest to ``target``.

    Least squares over the joints (Umeyama). Reflections are not allowed: when the best orthogonal
    map is a reflection, the last singular direction is flipped so that det(R) = +1, as the
    reference's ``compute_similarity_transform`` does.

    Args:
        predicted: (..., J, 3) poses.
        target: (..., J, 3) poses.

    Returns:
        (..., J, 3) ``predicted`` after the best similarity transform onto ``target``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {predicted.shape} and target {target.shape} differ in shape")
    predicted_mean = predicted.mean(-2, keepdims=True)
    target_mean = target.mean(-2, keepdims=True)
    p = predicted - predicted_mean  # (..., J, 3)
    t = target - target_mean
    covariance = np.swapaxes(p, -1, -2) @ t  # (..., 3, 3)
    u, singular_values, vt = np.linalg.svd(covariance)
    v = np.swapaxes(vt, -1, -2)
    u_t = np.swapaxes(u, -1, -2)
    flip = np.ones_like(singular_values)  # (..., 3)
    flip[..., -1] = np.sign(np.linalg.det(v @ u_t))
    rotation = v @ (flip[..., :, None] * u_t)  # (..., 3, 3): V diag(flip) U^T
    # trace(R C) = sum(flip * singular values); a pose collapsed to a point gets scale 0, not 0/0.
    variance = (p**2).sum((-2, -1))
    trace = (flip * singular_values).sum(-1)
    scale = np.divide(trace, variance, out=np.zeros_like(variance), where=variance > 0)
    return scale[..., None, None] * (p @ np.swapaxes(rotation, -1, -2)) + target_mean


def evaluate_h36m(
    predicted: np.ndarray,
    ground_truth: np.ndarray,
    actions: Sequence[str] | None = None,
    root_index: int = ROOT_INDEX,
) -> dict:
    """Root-relative MPJPE and PA-MPJPE in mm.

    Args:
        predicted: (N, J, 3) predicted poses in camera coordinates, mm (see :func:`image_to_camera`).
        ground_truth: (N, J, 3) true poses in camera coordinates, mm.
        actions: N action names (see :func:`action_from_file_name`), for the per-action errors.
        root_index: the joint both poses are made relative to.

    Returns:
        ``"MPJPE"``, ``"PA-MPJPE"``: mean over samples and joints; ``"MPJPE_per_joint"``,
        ``"PA-MPJPE_per_joint"``: (J,) lists; ``"MPJPE_xyz"``: mean absolute error along x, y, z;
        ``"MPJPE_per_action"``, ``"PA-MPJPE_per_action"``: ``{action: mm}`` for the actions
        present, in H36M_ACTIONS order (when ``actions`` is given); ``"num_samples"``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    ground_truth = np.asarray(ground_truth, dtype=np.float64)
    if predicted.ndim != 3 or predicted.shape[-1] != 3 or predicted.shape != ground_truth.shape:
        raise ValueError(f"expected predicted and ground_truth of the same shape (N, J, 3), got "
                         f"{predicted.shape} and {ground_truth.shape}")
    predicted = predicted - predicted[:, root_index : root_index + 1]
    ground_truth = ground_truth - ground_truth[:, root_index : root_index + 1]
    aligned = procrustes_align(predicted, ground_truth)
    errors = np.linalg.norm(predicted - ground_truth, axis=-1)  # (N, J)
    aligned_errors = np.linalg.norm(aligned - ground_truth, axis=-1)

    report = {
        "MPJPE": float(errors.mean()),
        "PA-MPJPE": float(aligned_errors.mean()),
        "MPJPE_per_joint": errors.mean(0).tolist(),
        "PA-MPJPE_per_joint": aligned_errors.mean(0).tolist(),
        "MPJPE_xyz": np.abs(predicted - ground_truth).mean((0, 1)).tolist(),
        "num_samples": int(errors.shape[0]),
    }
    if actions is not None:
        actions = np.asarray(actions)
        if actions.shape != (errors.shape[0],):
            raise ValueError(f"expected one action per sample ({errors.shape[0]}), got {actions.shape[0]}")
        unknown = set(actions.tolist()) - set(H36M_ACTIONS)
        if unknown:
            raise ValueError(f"unknown Human3.6M actions {sorted(unknown)}; known: {H36M_ACTIONS}")
        present = [a for a in H36M_ACTIONS if np.any(actions == a)]
        report["MPJPE_per_action"] = {a: float(errors[actions == a].mean()) for a in present}
        report["PA-MPJPE_per_action"] = {a: float(aligned_errors[actions == a].mean()) for a in present}
    return report
