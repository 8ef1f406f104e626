"""The pinhole camera of a SynthPose image, in Human3.6M's conventions.

World and camera coordinates are in millimetres, with y pointing down. ``R`` rotates world into
camera axes and ``t`` is the camera centre in the world, so ``X_cam = R (X_world - t)``; a camera
point projects to ``u = f_x X/Z + c_x``, ``v = f_y Y/Z + c_y`` (pixel centres at integers). This
is the ``cam_param`` layout of Human3.6M annotation files: ``{"R": 3x3, "t": 3, "f": 2, "c": 2}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """Attributes: R (3, 3) world -> camera rotation; t (3,) camera centre, mm; f (2,) and c (2,) in pixels."""

    R: np.ndarray
    t: np.ndarray
    f: np.ndarray
    c: np.ndarray

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points, mm -> (N, 3) camera points, mm."""
        return (points - self.t) @ self.R.T

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) camera points, mm -> (N, 3) world points, mm."""
        return points @ self.R + self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) camera points in front of the camera (Z > 0) -> (N, 2) pixel positions."""
        return points[:, :2] / points[:, 2:3] * self.f + self.c
