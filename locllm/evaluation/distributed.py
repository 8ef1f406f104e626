"""Running an evaluation in several processes with ``torch.distributed``, or in one without a launcher.

    locllm eval ...                                                  # one process
    torchrun --nproc-per-node 4 -m locllm eval ...                   # four, one GPU each
    accelerate launch --num-processes 4 -m locllm eval ...           # the same with accelerate

Each rank takes its share of the images and, at the end, the ranks exchange their predictions in
memory with ``all_gather_object``. The reference instead needs ``torchrun`` even for one GPU, and its
ranks write pickles that rank 0 polls for with sleeps (SPEC 11).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the evaluation's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process prints, and writes the files every process shares."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``world_size``-th item, starting at ``rank``."""
        return list(items[self.rank::self.world_size])

    def owns(self, index: int) -> bool:
        """Whether the ``index``-th item of a stream is this rank's (the rule of :meth:`shard`, without a list)."""
        return index % self.world_size == self.rank

    def all_gather(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            dist.barrier()

    def device(self) -> str:
        """This rank's accelerator: ``cuda:<local rank>`` where there is CUDA, else ``cpu``."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def evaluation_ranks() -> Iterator[Ranks]:
    """The ranks of this run.

    Uses the process group already initialized (e.g. by ``accelerate``); else starts one when a launcher
    set ``WORLD_SIZE`` > 1 (NCCL on GPUs, Gloo on CPUs) and closes it on exit; else a single process.
    """
    started_here = False
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched and dist.is_available() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # all_gather_object moves its buffers to the current device
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started_here = True
    try:
        if dist.is_available() and dist.is_initialized():
            yield Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        else:
            yield Ranks()
    finally:
        if started_here:
            dist.destroy_process_group()
