"""LocLLMImageProcessor: the person path's geometry both ways, against data/geometry (itself matched against the
reference in tests/parity): crops cut from boxes or a data set's regions, answers mapped back, stand-ins."""

import numpy as np
import pytest
import torch

from locllm.data.geometry import box_to_center_scale, crop_image, crop_to_image, image_to_crop
from locllm.models.image_processing_locllm import CropRegions, LocLLMImageProcessor

SIZE = 32
RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (90, 120, 3), dtype=np.uint8)
BOXES = np.array([[10.0, 5.0, 40.0, 60.0], [70.0, 30.0, 30.0, 20.0]])


def test_crops_from_boxes_are_the_geometry_s_crops_normalized():
    processor = LocLLMImageProcessor(SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, box_scale_factor=1.25)
    crops = processor(IMAGE, BOXES)
    centers, scales = box_to_center_scale(BOXES, 1.0, 1.25, 200.0)
    np.testing.assert_array_equal(crops.regions.centers, centers)
    np.testing.assert_array_equal(crops.regions.scales, scales)
    for p in range(len(BOXES)):
        crop = crop_image(IMAGE, centers[p], scales[p], 0.0, SIZE)
        expected = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
        torch.testing.assert_close(crops.pixel_values[p], expected)


def test_answers_come_back_in_image_pixels_with_each_region_s_own_pixel_std():
    processor = LocLLMImageProcessor(SIZE)
    # one region from a box (pixel_std 200), one as MPII gives it (pixel_std 1)
    from_box = processor.regions(BOXES[:1])
    mpii = CropRegions.of([np.array([60.0, 50.0])], [np.array([70.0, 70.0])], 1.0)
    regions = CropRegions.concatenate([from_box, mpii])
    truth = np.array([[[20.0, 30.0], [40.0, 50.0]], [[55.0, 45.0], [80.0, 70.0]]])
    normalized = np.stack([
        image_to_crop(truth[p], regions.centers[p], regions.scales[p], SIZE, pixel_std=regions.pixel_std[p]) / SIZE
        for p in range(2)])
    np.testing.assert_allclose(processor.post_process(normalized, regions), truth, atol=1e-9)


def test_unanswered_keypoints_stay_nan_or_go_to_their_crop_s_corner_with_depth_zero():
    processor = LocLLMImageProcessor(SIZE)
    regions = processor.regions(BOXES)
    normalized = np.array([[[0.5, 0.5, 120.0], [np.nan, np.nan, np.nan]],
                           [[0.25, 0.75, -40.0], [0.1, 0.2, 7.0]]])
    valid = np.array([[True, False], [True, False]])
    raw = processor.post_process(normalized, regions)
    assert np.isnan(raw[0, 1]).all() and raw[0, 0, 2] == 120.0  # depth kept, unanswered NaN
    placed = processor.post_process(normalized, regions, valid)
    np.testing.assert_array_equal(placed[valid], raw[valid])
    for p in range(2):
        corner = crop_to_image(np.zeros((1, 2)), regions.centers[p], regions.scales[p], SIZE)[0]
        np.testing.assert_array_equal(placed[p, 1], [*corner, 0.0])
    np.testing.assert_array_equal(processor.stand_ins(regions), placed[:, 1, :2])


def test_a_region_without_a_crop_stands_in_at_its_center():
    regions = CropRegions.of([np.array([12.0, 34.0]), np.array([5.0, 5.0])], [np.array([0.0, 0.0]),
                                                                               np.array([1.0, 1.0])], 200.0)
    assert regions.has_crop().tolist() == [False, True]
    stand_ins = LocLLMImageProcessor(SIZE).stand_ins(regions)
    np.testing.assert_array_equal(stand_ins[0], [12.0, 34.0])


def test_a_whole_crop_is_cut_as_itself_and_answers_in_it_stay_its_pixels():
    processor = LocLLMImageProcessor(SIZE)
    crop = RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    region = CropRegions.whole(SIZE)
    torch.testing.assert_close(processor(crop, region).pixel_values, processor.normalize([crop]), rtol=0, atol=0)
    points = np.array([[[0.25, 0.5], [0.0, 0.0]]])
    np.testing.assert_allclose(processor.post_process(points, region), points * SIZE, atol=1e-9)
    np.testing.assert_array_equal(region.boxes(), [[0.0, 0.0, SIZE, SIZE]])


def test_a_region_s_box_is_the_square_its_crop_shows():
    processor = LocLLMImageProcessor(SIZE)
    box = np.array([[20.0, 10.0, 50.0, 50.0]])  # square: the crop shows exactly the box
    np.testing.assert_allclose(processor.regions(box).boxes(), box, atol=1e-4)
    with pytest.raises(ValueError, match="boxes must be"):
        processor.regions([1.0, 2.0, 3.0])
