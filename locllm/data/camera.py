"""The pinhole camera, in Human3.6M's conventions: the one home of projection and back-projection.

World and camera coordinates are in millimetres, with y pointing down. ``R`` rotates world into
camera axes and ``t`` is the camera centre in the world, so ``X_cam = R (X_world - t)``; a camera
point projects to ``u = f_x X/Z + c_x``, ``v = f_y Y/Z + c_y`` (pixel centres at integers). This
is the ``cam_param`` layout of Human3.6M annotation files: ``{"R": 3x3, "t": 3, "f": 2, "c": 2}``.
SynthPose renders with this camera, the Human3.6M dataset projects its targets with it, and the
MPJPE evaluation back-projects answers with :func:`back_project`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def back_project(image_xy, depth, focal, principal) -> np.ndarray:
    """Pixel positions and camera depths -> camera points; the inverse of the projection.

    Args:
        image_xy: (..., J, 2) pixel x, y.
        depth: (..., J) camera depth z, mm.
        focal, principal: (..., 2) f_x, f_y and c_x, c_y in pixels (one camera per leading index).
    Returns:
        (..., J, 3) x, y, z in the camera frame, mm.
    """
    image_xy = np.asarray(image_xy, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    focal = np.asarray(focal, dtype=np.float64)[..., None, :]  # (..., 1, 2)
    principal = np.asarray(principal, dtype=np.float64)[..., None, :]
    xy = (image_xy - principal) / focal * depth[..., None]
    return np.concatenate([xy, depth[..., None]], axis=-1)


@dataclass(frozen=True)
class PinholeCamera:
    """Attributes: R (3, 3) world -> camera rotation; t (3,) camera centre, mm; f (2,) and c (2,) in pixels."""

    R: np.ndarray
    t: np.ndarray
    f: np.ndarray
    c: np.ndarray

    @classmethod
    def from_h36m(cls, cam_param: dict) -> PinholeCamera:
        """The camera of a Human3.6M ``cam_param`` entry (lists or arrays)."""
        return cls(R=np.asarray(cam_param["R"], dtype=np.float64).reshape(3, 3),
                   t=np.asarray(cam_param["t"], dtype=np.float64).reshape(3),
                   f=np.asarray(cam_param["f"], dtype=np.float64).reshape(2),
                   c=np.asarray(cam_param["c"], dtype=np.float64).reshape(2))

    def world_to_camera(self, points) -> np.ndarray:
        """(N, 3) world points, mm -> (N, 3) camera points, mm."""
        return (np.asarray(points, dtype=np.float64) - self.t) @ self.R.T

    def camera_to_world(self, points) -> np.ndarray:
        """(N, 3) camera points, mm -> (N, 3) world points (R is a rotation: its inverse is its transpose)."""
        return np.asarray(points, dtype=np.float64) @ self.R + self.t

    def project(self, points) -> np.ndarray:
        """(N, 3) camera points in front of the camera (Z > 0) -> (N, 2) pixel positions."""
        points = np.asarray(points, dtype=np.float64)
        return points[:, :2] / points[:, 2:3] * self.f + self.c

    def camera_to_pixel(self, points) -> np.ndarray:
        """(N, 3) camera points -> (N, 3): pixel x, y and the camera depth z."""
        points = np.asarray(points, dtype=np.float64)
        return np.concatenate([self.project(points), points[:, 2:3]], axis=1)

    def pixel_to_camera(self, points) -> np.ndarray:
        """(N, 3) pixel x, y and camera depth z (mm) -> (N, 3) camera points (undoes camera_to_pixel)."""
        points = np.asarray(points, dtype=np.float64)
        return back_project(points[:, :2], points[:, 2], self.f, self.c)

    def world_to_pixel_root_relative(self, points, root_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The reference Human3.6M target: world joints -> pixel x, y and depth relative to the root joint.

        Returns:
            ``(N, 3)`` pixel x, y and root-relative depth (mm), and the ``(N, 3)`` camera coordinates.
        """
        camera = self.world_to_camera(points)
        pixels = self.camera_to_pixel(camera)
        pixels[:, 2] -= camera[root_index, 2]
        return pixels, camera
