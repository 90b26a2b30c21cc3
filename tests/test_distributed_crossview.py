"""The crossview prior on sharded stores: a ray trained on one rank informs another rank's camera.
2 real gloo processes, each holding one of two cameras that see the same scene."""


def _crossview_worker(rank: int, port: int, out) -> None:
    import os

    import torch
    import torch.distributed as dist

    from evos_nerf.core.selector import RaySelector, SelectorConfig
    from evos_nerf.core.store import FitnessStore
    from test_core_crossview import _point, _views

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    config = SelectorConfig(strategy="topk", ratio=0.25, mutation=0.0, unvisited_prior="crossview", prior_block=4,
                            init_interval=2, end_interval=2)
    store = FitnessStore([(8, 8)], cameras=[rank], num_cameras=2)
    selector = RaySelector(config, store, 1, torch.Generator().manual_seed(rank), total_steps=10, views=_views())
    selector.initialise([torch.rand(8, 8, 3)])
    selector.maybe_evolve(0)
    # Rank 0 trains a failing ray in its block (0, 0); rank 1 a nearly learned one in its block (1, 1).
    y, error = (1, 1.0) if rank == 0 else (5, 0.01)
    flat = store.flat_index(torch.tensor([rank]), torch.tensor([y]), torch.tensor([y]))
    selector.observe(flat, torch.tensor([error]), 0, points=torch.tensor([_point(y, y)]))
    selector.maybe_evolve(1)
    selector.maybe_evolve(2)  # key iteration: the evidence is summed over both ranks
    out[rank] = sorted(map(tuple, store.unflatten(selector.pool.members()).tolist()))
    dist.destroy_process_group()


def test_a_rank_ranks_its_camera_by_the_errors_another_rank_trained():
    from gloo import run_two_ranks

    out = run_two_ranks(_crossview_worker)
    # Rank 1 never trained its block (0, 0), but rank 0's failing ray projects there:
    # (1.0 + 0.2575) / 2 against 0.2575 for the rest of camera 1 (its image mean).
    assert out[1] == [(1, y, x) for y in range(4) for x in range(4)]
    assert out[0] == [(0, y, x) for y in range(4) for x in range(4)]


def _occlusion_worker(rank: int, port: int, out) -> None:
    import os

    import torch
    import torch.distributed as dist

    from evos_nerf.core.selector import RaySelector, SelectorConfig
    from evos_nerf.core.store import FitnessStore
    from test_core_crossview import _point, _views

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    config = SelectorConfig(strategy="topk", ratio=0.25, mutation=0.0, unvisited_prior="crossview-pooled",
                            crossview_occlusion=0.1, prior_block=4, init_interval=2, end_interval=2)
    store = FitnessStore([(8, 8)], cameras=[rank], num_cameras=2)
    selector = RaySelector(config, store, 1, torch.Generator().manual_seed(rank), total_steps=10, views=_views())
    selector.initialise([torch.rand(8, 8, 3)])
    selector.maybe_evolve(0)
    if rank == 1:  # camera 1 sees its surface at depth 1 in its block (0, 0)
        flat = store.flat_index(torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))
        selector.observe(flat, torch.tensor([0.1]), 0, points=torch.tensor([_point(1, 1)]))
    selector.maybe_evolve(1)
    selector.maybe_evolve(2)  # key iteration: the surfaces are agreed over both ranks
    if rank == 0:  # a ray of camera 0 ending behind camera 1's surface there (depth 2) and one in front of it
        flat = store.flat_index(torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([1, 2]))
        points = torch.tensor([_point(1, 1, depth=2.0), _point(2, 2, depth=0.9)])
        selector.observe(flat, torch.tensor([1.0, 0.3]), 2, points=points)
    crossview = selector.crossview
    out[rank] = (crossview.surface[crossview.offsets[1]].item(), crossview.counts[crossview.offsets[1]].item())
    dist.destroy_process_group()


def test_the_occlusion_test_uses_the_surface_another_rank_trained():
    from gloo import run_two_ranks

    out = run_two_ranks(_occlusion_worker)
    assert out[0] == (1.0, 1.0)  # rank 0 knows camera 1's surface and keeps only the reading in front of it
    assert out[1] == (1.0, 0.0)
