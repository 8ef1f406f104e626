"""Top-down geometry: boxes, the affine crop and its inverse, flips, the MPII convention, the camera."""

from __future__ import annotations

import numpy as np
import pytest

from locllm.data import geometry as G
from locllm.data.camera import PinholeCamera


def random_points(rng: np.random.Generator, n: int = 50) -> np.ndarray:
    return rng.uniform(-100.0, 700.0, size=(n, 2))


# ------------------------------------------------------------------------------------------ boxes


@pytest.mark.parametrize(
    ("box", "aspect_ratio", "center", "scale"),
    [
        ((0, 0, 10, 20), 1.0, (5, 10), (0.1, 0.1)),  # tall: padded to 20 x 20
        ((5, 5, 40, 10), 1.0, (25, 10), (0.2, 0.2)),  # wide: padded to 40 x 40
        ((0, 0, 30, 40), 0.75, (15, 20), (0.15, 0.2)),  # already 3:4
        ((0, 0, 30, 30), 0.75, (15, 15), (0.15, 0.2)),  # padded to 30 x 40
    ],
)
def test_box_to_center_scale_pads_to_the_aspect_ratio(box, aspect_ratio, center, scale):
    got_center, got_scale = G.box_to_center_scale(box, aspect_ratio=aspect_ratio)
    assert got_center.dtype == np.float32 and got_scale.dtype == np.float32
    np.testing.assert_allclose(got_center, center, atol=1e-6)
    np.testing.assert_allclose(got_scale, scale, atol=1e-6)


def test_box_to_center_scale_factor_pixel_scale_and_batches():
    boxes = np.array([[100, 50, 80, 200], [0, 0, 300, 100]], dtype=np.float64)
    center, scale = G.box_to_center_scale(boxes, scale_factor=1.25, pixel_std=1.0)
    np.testing.assert_allclose(center, [[140, 150], [150, 50]])
    np.testing.assert_allclose(scale, [[250, 250], [375, 375]])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        G.box_to_center_scale([1, 2, 3])


def test_box_cleanups_differ_at_the_left_border():
    # COCO keeps the width and moves the box inwards; MPII-3D / H36M cut it at the border
    np.testing.assert_allclose(G.sanitize_coco_box([-15, 30, 60, 100], 320, 256), [0, 30, 59, 99])
    np.testing.assert_allclose(G.clip_box([-15, 30, 60, 100], 320, 256), [0, 30, 44, 99])
    np.testing.assert_allclose(G.clip_box([280, 200, 80, 90], 320, 256), [280, 200, 39, 55])
    assert G.sanitize_coco_box([400, 10, 20, 20], 320, 256)[2] < 0  # starts right of the image: invalid


# ------------------------------------------------------------------------------------------ affine


@pytest.mark.parametrize("rotation", [0.0, 30.0, -17.5, 90.0])
@pytest.mark.parametrize(("pixel_std", "scale", "output_size"), [(200.0, 0.9, 224), (1.0, 250.0, (192, 256))])
def test_affine_and_inverse_round_trip(rotation, pixel_std, scale, output_size):
    rng = np.random.default_rng(0)
    center = np.array([180.5, 140.25], dtype=np.float32)
    points = random_points(rng)
    crop = G.image_to_crop(points, center, scale, output_size, rotation, pixel_std)
    back = G.crop_to_image(crop, center, scale, output_size, rotation, pixel_std)
    np.testing.assert_allclose(back, points, atol=1e-6)

    forward = G.get_affine_transform(center, scale, rotation, output_size, pixel_std=pixel_std)
    inverse = G.get_affine_transform(center, scale, rotation, output_size, inv=True, pixel_std=pixel_std)
    composed = np.vstack([forward, [0, 0, 1]]) @ np.vstack([inverse, [0, 0, 1]])
    np.testing.assert_allclose(composed, np.eye(3), atol=1e-9)


def test_affine_maps_the_center_to_the_crop_center_and_zooms():
    center, scale = np.float32([90, 120]), np.float32([1.0, 1.0])  # 200 image px -> 224 crop px
    points = G.image_to_crop([[90, 120], [140, 120], [90, 20]], center, scale, 224)
    np.testing.assert_allclose(points, [[112, 112], [168, 112], [112, 0]], atol=1e-9)


def test_rotation_turns_the_content_counter_clockwise():
    center, scale = np.float32([100, 100]), 1.0
    above = G.image_to_crop([[100, 0]], center, scale, 224, rotation=30.0)[0]  # 100 px above the center
    length = 100 * 224 / 200
    expected = [112 - length * np.sin(np.radians(30)), 112 - length * np.cos(np.radians(30))]
    np.testing.assert_allclose(above, expected, atol=1e-3)


def test_affine_rejects_an_empty_crop():
    with pytest.raises(ValueError, match="positive width"):
        G.get_affine_transform(np.float32([100, 100]), np.float32([0, 0]), 0, 224)
    with pytest.raises(ValueError, match="output_size"):
        G.get_affine_transform(np.float32([100, 100]), 1.0, 0, (224, 0))


def test_affine_points_keeps_leading_shapes_and_inputs():
    points = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    before = points.copy()
    matrix = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    mapped = G.affine_points(points, matrix)
    assert mapped.shape == (2, 3, 2)
    np.testing.assert_allclose(mapped[..., 0], points[..., 0] * 2 + 1)
    np.testing.assert_array_equal(points, before)


# ------------------------------------------------------------------------------------------ warp


def test_warp_identity_and_integer_shift():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(G.warp_to_crop(image, identity, (50, 40)), image)
    shifted = G.warp_to_crop(image, np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]]), (50, 40))
    np.testing.assert_array_equal(shifted[:37, 5:], image[3:, :45])
    assert not shifted[:, :5].any() and not shifted[37:].any()  # black outside the image
    grey = G.warp_to_crop(image[..., 0], identity, (50, 40))
    np.testing.assert_array_equal(grey, image[..., 0])
    with pytest.raises(TypeError, match="uint8"):
        G.warp_to_crop(image.astype(np.float32), identity, 10)


def test_crop_image_of_a_constant_image_is_constant_inside():
    image = np.full((100, 100, 3), 200, dtype=np.uint8)
    crop = G.crop_image(image, np.float32([49.5, 49.5]), np.float32([0.4, 0.4]), 0.0, 64)  # 80 px window
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert (crop == 200).all()
    wide = G.crop_image(image, np.float32([49.5, 49.5]), np.float32([1.0, 1.0]), 0.0, 64)  # 200 px window
    assert wide[32, 32, 0] == 200 and wide[0, 0, 0] == 0


# ------------------------------------------------------------------------------------------ flip


def test_flip_is_an_involution_and_swaps_partners():
    rng = np.random.default_rng(2)
    joints = rng.uniform(0, 300, size=(5, 3))
    visible = np.array([True, True, False, True, False])
    flip_indices = [0, 2, 1, 4, 3]  # 0 on the midline, (1, 2) and (3, 4) partners
    before = joints.copy(), visible.copy()
    flipped, flipped_visible = G.flip_keypoints(joints, visible, flip_indices, image_width=320)
    np.testing.assert_allclose(flipped[1, 0], 319 - joints[2, 0])  # left now where the mirrored right was
    np.testing.assert_allclose(flipped[1, 1:], joints[2, 1:])  # y and depth unchanged
    np.testing.assert_array_equal(flipped_visible, visible[flip_indices])
    again, again_visible = G.flip_keypoints(flipped, flipped_visible, flip_indices, image_width=320)
    np.testing.assert_allclose(again, joints, atol=1e-12)
    np.testing.assert_array_equal(again_visible, visible)
    np.testing.assert_array_equal(joints, before[0])  # inputs untouched
    np.testing.assert_array_equal(visible, before[1])


def test_flip_rejects_a_table_that_does_not_pair_up():
    with pytest.raises(ValueError, match="pair keypoints"):
        G.flip_keypoints(np.zeros((3, 2)), np.ones(3, bool), [1, 2, 0], 100)
    with pytest.raises(ValueError, match="one entry per keypoint"):
        G.flip_keypoints(np.zeros((3, 2)), np.ones(3, bool), [0, 1], 100)


def test_flip_points_mirrors_pixel_centres():
    np.testing.assert_allclose(G.flip_points([[0, 5], [319, 7], [159.5, 1]], 320), [[319, 5], [0, 7], [159.5, 1]])


# ------------------------------------------------------------------------------------------ MPII


def test_mpii_center_scale_and_matlab_coordinates():
    center, scale = G.mpii_center_scale([180.0, 140.0], 1.1)
    np.testing.assert_allclose(center, [179.0, 155.5])  # y + 15 * 1.1, then 1-based -> 0-based
    np.testing.assert_allclose(scale, [1.375, 1.375])
    points = np.array([[1.0, 1.0, 7.0], [10.5, 20.0, 0.0]])
    zero_based = G.matlab_to_zero_based(points)
    np.testing.assert_allclose(zero_based, [[0.0, 0.0, 7.0], [9.5, 19.0, 0.0]])
    np.testing.assert_allclose(G.zero_based_to_matlab(zero_based), points)


# ------------------------------------------------------------------------------------------ camera


def rotation_about_y(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_camera_projection_round_trip():
    rng = np.random.default_rng(3)
    rotation, translation = rotation_about_y(20.0), np.array([100.0, -50.0, -4000.0])
    focal, principal = np.array([1145.0, 1144.0]), np.array([512.5, 515.4])
    world = rng.uniform(-900, 900, size=(17, 3))
    pinhole = PinholeCamera(R=rotation, t=translation, f=focal, c=principal)
    camera = pinhole.world_to_camera(world)
    np.testing.assert_allclose(pinhole.camera_to_world(camera), world, atol=1e-9)
    pixels = pinhole.camera_to_pixel(camera)
    np.testing.assert_allclose(pixels[:, 2], camera[:, 2])
    np.testing.assert_allclose(pinhole.pixel_to_camera(pixels), camera, atol=1e-9)


def test_camera_axis_projects_to_the_principal_point_and_depth_is_root_relative():
    world = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 300.0], [100.0, 0.0, 0.0]])
    pinhole = PinholeCamera.from_h36m({"R": np.eye(3), "t": [0.0, 0.0, -5000.0], "f": [500.0, 500.0], "c": [200.0, 150.0]})
    pixels, camera = pinhole.world_to_pixel_root_relative(world, root_index=0)
    np.testing.assert_allclose(camera[:, 2], [5000, 5300, 5000])
    np.testing.assert_allclose(pixels[0], [200, 150, 0])
    np.testing.assert_allclose(pixels[1], [200, 150, 300])
    np.testing.assert_allclose(pixels[2], [210, 150, 0])  # 100 mm at 5 m with f = 500 px -> 10 px
