"""Process-group setup for ``torchrun``: gloo on CPU, nccl on GPU; one process is a world of one.

``torchrun --nproc_per_node=N -m vlaforge.train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; ``setup`` reads them. Rank 0 logs and writes checkpoints; every rank computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process, no process group

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name}: expected an int in the environment, got {v!r}") from None


def resolve_device(pref: str, local_rank: int, distributed: bool) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device: expected a CUDA device for {pref!r}, but torch sees no GPU")
        if distributed or pref == "cuda":
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return torch.device(pref)


def setup(device_pref: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a world of one."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    distributed = world > 1
    device = resolve_device(device_pref, local_rank, distributed)
    if not distributed:
        return DistInfo(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, device, backend)


def teardown(info: DistInfo) -> None:
    if info.enabled and td.is_initialized():
        td.destroy_process_group()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max); a no-op in a single process."""
    if info.enabled:
        op_ = {"sum": td.ReduceOp.SUM, "max": td.ReduceOp.MAX}[op]
        if info.backend == "nccl" and t.device.type != "cuda":  # nccl reduces GPU tensors only
            on_dev = t.to(info.device)
            td.all_reduce(on_dev, op=op_)
            t.copy_(on_dev.cpu())
        else:
            td.all_reduce(t, op=op_)
    return t


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        td.barrier()
