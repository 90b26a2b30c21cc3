"""Live controls (the viewer's, on rank 0) reach every rank: 2 real gloo processes."""


def _controls_worker(rank: int, port: int, out) -> None:
    import os
    from types import SimpleNamespace

    import torch.distributed as dist

    from evos_nerf.nerfstudio.datamanager import EvosControls, EvosDataManager

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    controls = EvosControls(selection_ratio=0.2, mutation_ratio=0.25)
    if rank == 0:  # the viewer lives on rank 0 only
        controls.selection_ratio, controls.mutation_ratio, controls.paused = 0.5, 0.1, True
    dm = SimpleNamespace(controls=controls, statistics={}, last_key_step=-1)
    EvosDataManager.begin_step(dm, step=7)
    out[rank] = (controls.selection_ratio, controls.mutation_ratio, controls.paused)
    dist.destroy_process_group()


def test_viewer_controls_set_on_rank_0_reach_every_rank_at_the_next_step():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_controls_worker, args=(port, out), nprocs=2, join=True)
        assert out[0] == out[1] == (0.5, 0.1, True)
