"""Data parallelism on torch.distributed: each process measures its share of the batches, then every
observer is merged with its declared ops.

Launched by `torchrun --nproc-per-node N -m maxact_card audit ...` or `accelerate launch -m
maxact_card audit ...` (both set RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address). Each
process takes every N-th batch of the single-process plan, so a batch has exactly the shapes it
has in a single-process run: maxima, minima, locations, counts and histograms equal that run's bit
for bit, and sums equal it up to the order of float64 additions.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, TypeVar

import torch

from ..errors import DistributedError
from .observers import Observer

T = TypeVar("T")
# How long a collective waits for a process that stopped answering before the run ends.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("MAXACT_DIST_TIMEOUT_MIN", "30")))


def launched() -> bool:
    """Started by torchrun or accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        return list(items[self.rank :: self.world])

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        try:
            torch.distributed.all_gather_object(out, obj)
        except (RuntimeError, torch.distributed.DistError):
            raise DistributedError(f"process {self.rank} of {self.world} lost contact with the others: a process "
                                   "stopped (see its log); nothing was written, run again") from None
        return out

    def agree(self, what: str, value: Any) -> None:
        """Every process must have started with the same `value` (options, corpus)."""
        values = self.all_gather(value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise DistributedError(f"processes {', '.join(map(str, differ))} were started with other {what} than "
                                   "process 0; start every process with the same command")

    def smallest(self, value: int) -> int:
        return min(self.all_gather(value))

    def merge(self, observers: Sequence[Observer]) -> None:
        """Every observer becomes the merge of all processes' (rank 0's, then rank 1's, ...):
        the same result, bit for bit, in every process."""
        if self.world == 1:
            return
        states = self.all_gather([{n: t.cpu() for n, t in o.state_dict().items()} for o in observers])
        for i, o in enumerate(observers):
            o.load_state_dict(states[0][i])
            for r in range(1, self.world):
                o.merge(states[r][i])


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def init(device: Optional[str]) -> Group:
    """Join the run torchrun/accelerate started (gloo on the CPU, nccl on CUDA); rank 0 of 1 without one."""
    if not launched():
        return Group()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device or "auto") not in ("cpu",)
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"cannot join the data-parallel run ({_short(exc)}); "
                                   "start it with torchrun or accelerate launch") from None
    return Group(dist.get_rank(), dist.get_world_size())


def local_device() -> Optional[str]:
    """The GPU of this process in a data-parallel run on CUDA (one each), else None."""
    if launched() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


_held = False


@contextlib.contextmanager
def held() -> Iterator[None]:
    """One process group for several audits (`audit --models`): `finish` leaves it up until the
    last one is done. (Joining again after a destroy hangs on torchrun's store.)"""
    global _held
    _held = True
    try:
        yield
    finally:
        _held = False
    # Not after a failure: that process exits at once (see cli._fail), its group as it is.
    if launched() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def finish(group: Group) -> None:
    if group.world > 1 and torch.distributed.is_initialized() and not _held:
        torch.distributed.destroy_process_group()
