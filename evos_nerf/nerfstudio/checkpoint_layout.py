"""Global <-> shard conversion of the selector's checkpoint entries.

Checkpoints always carry the *global* store (every camera, in camera order), so a run can resume on
any number of ranks: the shards are gathered to rank 0 before a save and sliced out again on load.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from evos_nerf import distributed
from evos_nerf.core.selector import RaySelector
from evos_nerf.core.store import FitnessStore, pixel_offsets

PIXEL_BUFFERS = ("fitness", "last_step", "edges", "valid", "visits")


def gather_global_state(selector: RaySelector, offsets: Tensor, widths: Tensor) -> Optional[Dict[str, Any]]:
    """Collective: every rank's store and selector state in global pixel order on rank 0 (None elsewhere).

    Keys are relative to the selector (``store.fitness``, ``_extra_state``, ...).
    """
    store = selector.store
    owned = distributed.gather_to_main(store.cameras.cpu())
    parts = {name: distributed.gather_to_main(getattr(store, name).cpu()) for name in PIXEL_BUFFERS}
    pool = selector.pool.indices if selector.pool is not None else torch.empty(0, dtype=torch.long)
    pools = distributed.gather_to_main(store.to_global_flat(pool, offsets, widths).cpu())
    generators = distributed.gather_objects_to_main(selector.generator.get_state())
    if owned is None:
        return None
    cameras = torch.cat(owned)
    if sorted(cameras.tolist()) != list(range(offsets.numel() - 1)):
        raise RuntimeError(f"EVOS shards are not a partition of the training cameras: {[o.tolist() for o in owned]}")
    out: Dict[str, Any] = {}
    for name, per_rank in parts.items():
        full = torch.empty(int(offsets[-1]), dtype=per_rank[0].dtype)
        for cams, values in zip(owned, per_rank):
            at = 0
            for c in cams.tolist():
                n = int(offsets[c + 1] - offsets[c])
                full[offsets[c] : offsets[c + 1]] = values[at : at + n]
                at += n
        out["store." + name] = full
    heights = (offsets[1:] - offsets[:-1]) // widths
    out.update({
        "store.heights": heights, "store.widths": widths.clone(), "store.offsets": offsets.clone(),
        "store.cameras": torch.arange(offsets.numel() - 1), "store.initialised": store.initialised.cpu().clone(),
        "store._extra_state": store.get_extra_state(),
    })
    extra = selector.get_extra_state()
    extra["pool"] = torch.cat(pools) if selector.pool is not None else None
    extra["generators"] = generators
    extra["generator"] = None
    out["_extra_state"] = extra
    return out


def check_global_store(state_dict: Dict[str, Any], prefix: str, offsets: Tensor) -> None:
    """Clear errors for a checkpoint whose store does not match this dataset."""
    saved = state_dict[prefix + "store.fitness"].numel()
    here = int(offsets[-1])
    if saved != here:
        raise ValueError(
            f"checkpoint's EVOS fitness store covers {saved:,} pixels but this dataset's training "
            f"images have {here:,}: was it trained on another dataset or split?"
        )
    saved_offsets = state_dict.get(prefix + "store.offsets")
    if saved_offsets is None or saved_offsets.numel() != offsets.numel() or not torch.equal(saved_offsets.cpu(), offsets):
        raise ValueError(
            "checkpoint's EVOS fitness store is not a complete global store for this dataset's "
            "training images (a shard, or images of other sizes); it cannot be resumed here"
        )


def shard_state_dict(state_dict: Dict[str, Any], prefix: str, store: FitnessStore, offsets: Tensor, widths: Tensor) -> None:
    """Rewrite global entries in place into this rank's shard (the store's, the pool, the RNG)."""
    extra_key = prefix + "_extra_state"
    extra = dict(state_dict.get(extra_key) or {})
    generators = extra.get("generators")
    if generators is not None:
        rank, world = distributed.get_rank(), distributed.get_world_size()
        extra["generator"] = generators[rank] if len(generators) == world else None
        if len(generators) != world:
            print(f"EVOS: checkpoint was written by {len(generators)} rank(s), resuming on {world}: "
                  "the fitness store is re-sharded exactly; selection RNG streams restart per rank")
    own = store.cameras.cpu().tolist()
    if own != list(range(offsets.numel() - 1)):
        for name in PIXEL_BUFFERS:
            key = prefix + "store." + name
            if key in state_dict:
                full = state_dict[key]
                state_dict[key] = torch.cat([full[offsets[c] : offsets[c + 1]] for c in own])
        for name in ("heights", "widths"):
            key = prefix + "store." + name
            if key in state_dict:
                state_dict[key] = state_dict[key][own]
        state_dict[prefix + "store.cameras"] = torch.tensor(own)
        state_dict[prefix + "store.offsets"] = pixel_offsets((offsets[1:] - offsets[:-1])[own])
        if extra.get("pool") is not None:
            extra["pool"] = store.from_global_flat(extra["pool"], offsets, widths).cpu()
    if extra:
        state_dict[extra_key] = extra
