"""Live controls (the viewer's, on rank 0) reach every rank: 2 real gloo processes."""


def _controls_worker(rank: int, port: int, out) -> None:
    import os

    import torch
    import torch.distributed as dist

    from evos_nerf.core.selector import RaySelector, SelectorConfig
    from evos_nerf.core.store import FitnessStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    store = FitnessStore([(2, 2)], cameras=[rank], num_cameras=2)
    selector = RaySelector(SelectorConfig(ratio=0.2, mutation=0.25), store, 4, torch.Generator().manual_seed(rank))
    selector.initialise([torch.rand(2, 2, 3)])
    if rank == 0:  # the viewer lives on rank 0 only
        selector.controls.ratio, selector.controls.mutation, selector.controls.paused = 0.5, 0.1, True
    selector.maybe_evolve(7)
    c = selector.controls
    out[rank] = (c.ratio, c.mutation, c.paused)
    dist.destroy_process_group()


def test_viewer_controls_set_on_rank_0_reach_every_rank_at_the_next_step():
    from gloo import run_two_ranks

    out = run_two_ranks(_controls_worker)
    assert out[0] == out[1] == (0.5, 0.1, True)
