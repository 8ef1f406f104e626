"""Several datasets as one, each repeated by its own factor (e.g. Human3.6M + MPII for 3D training).

The reference concatenates its datasets with whole-number repeats; here a factor may also be fractional:
a dataset of ``n`` items with factor ``r`` contributes ``round(r * n)`` items, whole copies first and then
a fixed random subset for the fraction, so ``0.5`` means half of it, not its first half.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset


class MixtureDataset(Dataset):
    """The concatenation of ``datasets``, dataset ``i`` repeated ``repeats[i]`` times.

    Args:
        datasets: map-style datasets (each with ``__len__`` and ``__getitem__``).
        repeats: one positive factor per dataset; all 1 when omitted.
        seed: picks the subsets for fractional factors.
    """

    def __init__(
        self, datasets: Sequence[Dataset], repeats: Sequence[float] | None = None, seed: int = 0
    ) -> None:
        if not datasets:
            raise ValueError("MixtureDataset needs at least one dataset")
        repeats = [1.0] * len(datasets) if repeats is None else [float(r) for r in repeats]
        if len(repeats) != len(datasets):
            raise ValueError(f"got {len(repeats)} repeat factors for {len(datasets)} datasets")
        if any(not np.isfinite(r) or r <= 0 for r in repeats):
            raise ValueError(f"repeat factors must be positive, got {repeats}")
        self.datasets = list(datasets)
        self.repeats = repeats
        rng = np.random.default_rng(seed)
        self.lengths: list[int] = []
        self._partial_orders: list[np.ndarray] = []  # which items fill each dataset's fractional copy
        for dataset, repeat in zip(self.datasets, repeats, strict=True):
            size = len(dataset)
            length = int(round(repeat * size))
            if length == 0:
                raise ValueError(
                    f"repeat factor {repeat} leaves nothing of {type(dataset).__name__} ({size} items)"
                )
            self.lengths.append(length)
            self._partial_orders.append(rng.permutation(size)[: length % size])
        self.cumulative_lengths = np.cumsum(self.lengths).tolist()

    def __len__(self) -> int:
        return self.cumulative_lengths[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Mixture index -> (dataset index, index inside that dataset)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a mixture of length {len(self)}")
        which = bisect.bisect_right(self.cumulative_lengths, index)
        offset = index - (self.cumulative_lengths[which - 1] if which else 0)
        size = len(self.datasets[which])
        whole = (self.lengths[which] // size) * size
        inner = offset % size if offset < whole else int(self._partial_orders[which][offset - whole])
        return which, inner

    def __getitem__(self, index: int):
        which, inner = self.locate(index)
        return self.datasets[which][inner]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the datasets that draw augmentations from it."""
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    @property
    def skip_counts(self) -> list[dict | None]:
        """Each dataset's ``skip_counts`` (``None`` for datasets without them)."""
        return [getattr(dataset, "skip_counts", None) for dataset in self.datasets]
