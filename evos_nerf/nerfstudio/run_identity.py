"""The identity of a training run, shared by its nerfstudio checkpoint and its EVOS state.

nerfstudio's ``step-N.ckpt`` and the EVOS folder beside it (``evos_nerf.nerfstudio.evos_checkpoint``)
are written separately, so a resume must be able to tell that the two belong together. The
datamanager carries a random run identity in its module extra state, which upstream saves inside
``step-N.ckpt`` with no code of ours, and the EVOS state records the same identity.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, Optional

import torch

from evos_nerf import distributed


def agreed_run_id() -> str:
    """A fresh random run identity, the same on every rank (rank 0's)."""
    value = torch.tensor([uuid.uuid4().int >> 66], dtype=torch.int64)  # 62 random bits
    return f"{int(distributed.broadcast(value)[0]):016x}"


class RunIdentity:
    """Mixin for an ``nn.Module`` (the datamanager): the run identity in its extra state."""

    run_id: str = ""
    """Identity of the run, shared by its nerfstudio and EVOS checkpoints (a resume keeps it)."""
    checkpoint_run_id: Optional[str] = None
    """The run identity of the nerfstudio checkpoint loaded, if it has one."""

    def get_extra_state(self) -> Dict[str, Any]:
        return {"evos_run_id": self.run_id}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        saved = state.get("evos_run_id") if isinstance(state, dict) else None
        self.checkpoint_run_id = str(saved) if saved else None
        self.run_id = self.checkpoint_run_id or self.run_id  # a resumed run keeps its identity

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A checkpoint written before the run identity existed still loads (ns-eval, ns-viewer); a
        # resume then asks for the EVOS state and says what is missing.
        state_dict.setdefault(prefix + "_extra_state", {})
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
