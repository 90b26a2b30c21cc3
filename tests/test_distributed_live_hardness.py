"""The live pool hardness is agreed over ranks, so every shard splits its batch the same way:
2 real gloo processes, each holding one camera."""

import pytest


def _hardness_worker(rank: int, port: int, out) -> None:
    import os

    import torch
    import torch.distributed as dist

    from evos_nerf.core.selector import RaySelector, SelectorConfig
    from evos_nerf.core.store import FitnessStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    config = SelectorConfig(mutation_control="live", init_interval=2, end_interval=2)
    store = FitnessStore([(4, 4)], cameras=[rank], num_cameras=2)
    selector = RaySelector(config, store, 4, torch.Generator().manual_seed(rank), total_steps=100)
    selector.initialise([torch.rand(4, 4, 3)])
    every = torch.arange(16)
    selector.maybe_evolve(0)
    selector.observe(every, torch.linspace(0.1, 1.6, 16), 0)  # measured: a pool can be ranked
    selector.maybe_evolve(1)
    selector.maybe_evolve(2)  # key iteration: the first pool
    inside = selector.pool.contains(every)
    # Rank 0 trains only pool members (error 3), rank 1 only pixels outside its pool (error 1).
    flat = every[inside][:2] if rank == 0 else every[~inside][:2]
    selector.observe(flat, torch.full((2,), 3.0 if rank == 0 else 1.0), 2)
    selector.maybe_evolve(3)
    selector.maybe_evolve(4)  # key iteration: the interval's sums are agreed over both ranks
    pool_fraction = 1.0 - selector.num_unselected_total / selector.num_valid_total
    out[rank] = (selector.live.hardness, pool_fraction, selector.mutant_share(5))
    dist.destroy_process_group()


def test_ranks_agree_on_the_hardness_and_the_split_though_each_saw_one_side():
    from gloo import run_two_ranks

    out = run_two_ranks(_hardness_worker)
    assert out[0] == out[1]
    hardness, pool_fraction, share = out[0]
    assert hardness == 3.0  # rank 0's pool rays over rank 1's: neither rank alone could tell
    assert 0.0 < pool_fraction < 1.0
    assert share == pytest.approx((1 - pool_fraction) / (3.0 * pool_fraction + 1 - pool_fraction))
