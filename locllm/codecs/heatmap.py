"""Keypoints in crop pixels <-> Gaussian heatmaps: the codec of the CLIP baseline (paper 3.4).

A heatmap of side ``H`` covers a crop of side ``S`` with cells of ``stride = S / H`` crop pixels. Pixel
centres sit on integer coordinates (as in :mod:`locllm.data.geometry`), so cell ``u`` spans crop pixels
``[u * stride, (u + 1) * stride)`` and its centre is at ``(u + 0.5) * stride - 0.5``. HRNet maps with
``x / stride`` instead, which shifts every prediction by ``(stride - 1) / 2`` pixels; the aligned map
keeps encode and decode exact inverses.

Targets are Gaussians centred on the keypoint's exact sub-cell position (HRNet rounds the centre to a
cell first, which loses up to half a cell before the model sees anything). Decoding is HRNet's /
SimpleBaseline's: the argmax cell, moved a quarter cell towards the higher neighbour on each axis; so a
decoded target lands within a quarter cell of its keypoint (half a cell in the outermost cells, which
have no neighbour on one side and are not moved).
"""

from __future__ import annotations

import torch

from .base import KeypointCodec


class HeatmapCodec(KeypointCodec):
    """Encode keypoints as Gaussian heatmaps and decode heatmaps back to keypoints.

    Args:
        image_size: side ``S`` of the square crop, in pixels.
        heatmap_size: side ``H`` of the square heatmap.
        sigma: standard deviation of the target Gaussians, in heatmap cells.
    """

    ndim = 2  # coordinates per keypoint, as the evaluation runner asks of every localizer's codec

    def __init__(self, image_size: int, heatmap_size: int, sigma: float = 2.0):
        if image_size <= 0 or heatmap_size <= 0 or sigma <= 0:
            raise ValueError(f"image_size, heatmap_size and sigma must be positive, got "
                             f"{image_size}, {heatmap_size}, {sigma}")
        self.image_size = image_size
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.stride = image_size / heatmap_size

    def crop_to_heatmap(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 2) crop pixels -> (..., 2) heatmap cells."""
        return (points + 0.5) / self.stride - 0.5

    def heatmap_to_crop(self, cells: torch.Tensor) -> torch.Tensor:
        """(..., 2) heatmap cells -> (..., 2) crop pixels."""
        return (cells + 0.5) * self.stride - 0.5

    def encode(self, keypoints, visible) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets for ``Q`` keypoints.

        Args:
            keypoints: (Q, 2) x, y in crop pixels.
            visible: (Q,) whether each keypoint is supervised.

        Returns:
            heatmaps (Q, H, H) float32 with peak 1 at the keypoint; weights (Q,) float32, 1 where visible
            and inside the crop, else 0 (and an all-zero heatmap).
        """
        points = torch.as_tensor(keypoints, dtype=torch.float32).reshape(-1, 2)
        inside = ((points >= -0.5) & (points < self.image_size - 0.5)).all(dim=1)
        weights = (torch.as_tensor(visible, dtype=torch.bool).reshape(-1) & inside).float()
        cells = self.crop_to_heatmap(points)
        grid = torch.arange(self.heatmap_size, dtype=torch.float32)
        dx2 = (grid[None, :] - cells[:, :1]) ** 2  # (Q, H) along x
        dy2 = (grid[None, :] - cells[:, 1:]) ** 2  # (Q, H) along y
        heatmaps = torch.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * self.sigma**2))
        return heatmaps * weights[:, None, None], weights

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, H, W) heatmaps -> keypoints (Q, 2) x, y in crop pixels and scores (Q,), the peak values."""
        heatmaps = heatmaps.detach().float()
        queries, height, width = heatmaps.shape
        scores, flat = heatmaps.reshape(queries, -1).max(dim=1)
        row, col = flat // width, flat % width
        rows = torch.arange(queries, device=heatmaps.device)

        def quarter_step(position, size, before, after):
            # a quarter cell towards the higher neighbour, where both neighbours exist
            has_both = (position > 0) & (position < size - 1)
            return torch.where(has_both, 0.25 * torch.sign(after - before), torch.zeros_like(before))

        left = heatmaps[rows, row, (col - 1).clamp(min=0)]
        right = heatmaps[rows, row, (col + 1).clamp(max=width - 1)]
        up = heatmaps[rows, (row - 1).clamp(min=0), col]
        down = heatmaps[rows, (row + 1).clamp(max=height - 1), col]
        cells = torch.stack([col.float() + quarter_step(col, width, left, right),
                             row.float() + quarter_step(row, height, up, down)], dim=1)
        return self.heatmap_to_crop(cells), scores


__all__ = ["HeatmapCodec"]
