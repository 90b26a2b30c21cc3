"""Packed membership bits: one bit per pixel (the candidate pool's membership, in memory and on disk).

Bit ``i % 8`` of byte ``i // 8`` is entry i (numpy's ``packbits(bitorder="little")``), so a slice
of whole bytes is the membership of a slice of entries.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
_CHUNK = 1 << 23  # entries per packing chunk (a multiple of 8)


@lru_cache(maxsize=None)
def _weights(device: torch.device) -> Tensor:
    """The bit values on ``device``, copied there once: a per-call ``.to`` is a host-to-device copy
    (and a wait) on a GPU every time a membership is tested."""
    return _WEIGHTS.to(device)


def num_bytes(n: int) -> int:
    return (int(n) + 7) // 8


def pack_bits(mask: Tensor) -> Tensor:
    """[n] bool -> [ceil(n / 8)] uint8."""
    mask = mask.reshape(-1)
    n = mask.numel()
    out = torch.empty(num_bytes(n), dtype=torch.uint8, device=mask.device)
    weights = _weights(mask.device)
    for start in range(0, n, _CHUNK):
        end = min(start + _CHUNK, n)
        part = mask[start:end]
        if part.numel() % 8:
            part = torch.cat([part, part.new_zeros(8 - part.numel() % 8)])
        bytes_ = part.view(-1, 8).view(torch.uint8)
        out[start // 8 : start // 8 + bytes_.shape[0]] = (bytes_ * weights).sum(1, dtype=torch.uint8)
    return out


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """[ceil(n / 8)] uint8 -> [n] bool."""
    if packed.numel() != num_bytes(n):
        raise ValueError(f"{packed.numel()} bytes cannot hold exactly {n} bits")
    bits = (packed.reshape(-1, 1) & _weights(packed.device)) != 0
    return bits.reshape(-1)[:n]


def bits_of_indices(indices: Tensor, n: int) -> Tensor:
    """Packed bits with the given (distinct) entries set. O(len(indices))."""
    packed = torch.zeros(num_bytes(n), dtype=torch.uint8, device=indices.device)
    indices = indices.long()
    # Distinct entries set distinct bits, so adding the bit values is the same as OR-ing them.
    packed.index_add_(0, indices >> 3, (_weights(indices.device)[indices & 7]))
    return packed


def bits_at(packed: Tensor, indices: Tensor) -> Tensor:
    """Whether each entry is set: [R] bool, O(R)."""
    indices = indices.to(packed.device).long()
    # index_select, not packed[...]: advanced indexing costs 3-4x as much on the CPU (one thread).
    return (packed.index_select(0, indices >> 3) & _weights(packed.device).index_select(0, indices & 7)) != 0
