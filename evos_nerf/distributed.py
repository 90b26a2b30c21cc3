"""The few torch.distributed operations EVOS needs, as no-ops on a single process.

Kept free of nerfstudio so the core, the image trainer and the NeRF glue can share it. Every
function here is a collective when a process group with more than one rank is initialised:
call it on every rank in the same order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

# gloo has no bool/int16 reductions; move such tensors through a wider dtype.
_WIRE_DTYPE = {torch.bool: torch.uint8, torch.int16: torch.int32, torch.float16: torch.float32}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum over ranks (a copy; the input is untouched)."""
    if not is_distributed():
        return t
    wire = t.detach().to(_comm_device(), _WIRE_DTYPE.get(t.dtype, t.dtype)).clone()
    dist.all_reduce(wire, op=dist.ReduceOp.SUM)
    return wire.to(t.device, t.dtype)


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s value of ``t`` on every rank (a copy)."""
    if not is_distributed():
        return t
    wire = t.detach().to(_comm_device(), _WIRE_DTYPE.get(t.dtype, t.dtype)).clone()
    dist.broadcast(wire, src=src)
    return wire.to(t.device, t.dtype)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
