"""``ns-train`` for torchrun: one process per device, ranks read from the environment.

    torchrun --nproc_per_node 2 -m evos_nerf.train evos-nerf --data DIR [the usual ns-train flags]

nerfstudio 1.1.5's own launcher spawns its processes itself and requires CUDA, so it cannot run
under torchrun (or on CPU). Here torchrun owns the processes: this module reads ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``, joins the process group (``nccl`` on CUDA,
``gloo`` on CPU) with a timeout, broadcasts rank 0's parsed config (so every rank writes to rank
0's timestamped output folder), and trains as nerfstudio's ``train_loop`` does. Each rank then
writes ``<output>/distributed/rank<R>.json`` (its shard, batch sizes and a parameter checksum).
Without torchrun it is plain single-process ``ns-train``.

Errors a user can act on (``evos_nerf.errors.one_line``: a bad scene, flag or checkpoint, a NaN
loss, a failed save) end a rank with one ``error: rank R of W: ...`` line, also written to
torchrun's error file so that torchrun's failure summary shows it instead of a bare exit code;
torchrun then stops the other ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import timedelta
from typing import NoReturn, Optional

import torch
import torch.distributed as dist
import tyro
import yaml
from nerfstudio.configs.config_utils import convert_markup_to_ansi
from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.scripts.train import _set_random_seed
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from evos_nerf.errors import install_excepthook, one_line
from evos_nerf.io import write_json

DEFAULT_TIMEOUT_S = 1800.0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"error: environment variable {name}={value!r} is not an integer") from None


def resolve_aliases(config: TrainerConfig) -> TrainerConfig:
    """The --data / --prompt / --load-config conveniences of ns-train's main()."""
    if config.data:
        config.pipeline.datamanager.data = config.data
    if config.prompt:
        config.pipeline.model.prompt = config.prompt
    if config.load_config:
        CONSOLE.log(f"Loading pre-set config from: {config.load_config}")
        config = yaml.load(config.load_config.read_text(), Loader=yaml.Loader)
    return config


def is_collective_failure(err: BaseException) -> bool:
    """Errors that mean another rank is gone or stuck, not a bug on this one."""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(s in text for s in ("timed out", "timeout", "connection closed", "connection reset", "pair closure",
                                   "gloo", "nccl"))


def stop_rank(rank: int, world: int, line: str) -> NoReturn:
    """End this rank with one line, on stderr and in torchrun's error file, without waiting for the others."""
    text = f"error: rank {rank} of {world}: {line}"
    print(text, file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w") as handle:
                # torchrun's format (ErrorHandler.record_exception); its summary prints py_callstack.
                info = {"py_callstack": text, "timestamp": str(int(time.time()))}
                json.dump({"message": {"message": text, "extraInfo": info}}, handle)
        except OSError:
            pass
    sys.stdout.flush()
    os._exit(1)  # destroy_process_group / interpreter exit could wait on ranks stuck in a collective


def init_distributed(config: TrainerConfig, rank: int, local_rank: int, world: int, local_world: int) -> str:
    on_cuda = config.machine.device_type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise SystemExit("error: --machine.device-type cuda but CUDA is not available on this machine")
    backend = "nccl" if on_cuda else "gloo"
    if on_cuda:
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=float(getattr(config, "collective_timeout_s", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
    if world % local_world:
        raise SystemExit(f"error: WORLD_SIZE {world} is not a multiple of LOCAL_WORLD_SIZE {local_world}")
    for machine in range(world // local_world):  # every rank must create every group
        group = dist.new_group(list(range(machine * local_world, (machine + 1) * local_world)))
        if machine == rank // local_world:
            comms.LOCAL_PROCESS_GROUP = group
    return backend


def parameter_checksum(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes in name order: equal on all ranks iff DDP kept them in sync."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_ranked(local_rank: int, world: int, config: TrainerConfig, rank: int) -> None:
    """nerfstudio's train_loop, plus a per-rank summary (shard, batch sizes, parameter checksum)."""
    _set_random_seed(config.machine.seed + rank)
    trainer = config.setup(local_rank=local_rank, world_size=world)
    trainer.setup()
    trainer.train()
    dm = trainer.pipeline.datamanager
    selector = getattr(dm, "selector", None)
    store = None if selector is None else selector.store
    write_json(trainer.base_dir / "distributed" / f"rank{rank}.json", {
        "rank": rank,
        "world_size": world,
        "shard_cameras": None if store is None else store.cameras.tolist(),
        "shard_pixels": None if store is None else store.num_pixels,
        "store_bytes": None if store is None else store.memory_bytes(),
        "batch_sizes": sorted(getattr(dm, "batch_sizes", set())),
        "parameter_checksum": parameter_checksum(trainer.pipeline.model),
        "steps": trainer.step + 1,
    })


def main(config: TrainerConfig) -> None:
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    config = resolve_aliases(config)
    if world == 1:
        config.set_timestamp()
        config.print_to_terminal()
        config.save_config()
        train_ranked(0, 1, config, 0)
        return

    backend = init_distributed(config, rank, local_rank, world, local_world)
    shared: list[Optional[TrainerConfig]] = [None]
    if rank == 0:
        config.set_timestamp()
        shared[0] = config
    dist.broadcast_object_list(shared, src=0)  # one output folder for all ranks
    config = shared[0]
    config.machine.num_devices = local_world
    config.machine.num_machines = world // local_world
    config.machine.machine_rank = rank // local_world
    if rank == 0:
        config.print_to_terminal()
        config.save_config()
        CONSOLE.print(f"evos_nerf.train: {world} ranks ({backend}), output {config.get_base_dir()}")
    try:
        train_ranked(local_rank, world, config, rank)
        dist.barrier()
    except Exception as err:
        line = one_line(err)
        if line is not None:
            stop_rank(rank, world, line)
        if not is_collective_failure(err):
            raise
        timeout = getattr(config, "collective_timeout_s", DEFAULT_TIMEOUT_S)
        # One unwrapped line (rich wrapped this at the terminal width, splitting the message a user
        # or a log grep looks for); stop_rank exits without waiting for the missing rank.
        stop_rank(rank, world, (
            f"a collective with the other ranks failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            f"Another rank has died or has not answered for {timeout:.0f} s (--collective-timeout-s); stopping this rank."
        ))
    dist.destroy_process_group()


def entrypoint() -> None:
    install_excepthook()  # single-process runs: one line, as under ns-train
    tyro.extras.set_accent_color("bright_yellow")
    main(tyro.cli(AnnotatedBaseConfigUnion, description=convert_markup_to_ansi(__doc__ or "")))


if __name__ == "__main__":
    entrypoint()
