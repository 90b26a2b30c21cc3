"""The live pool hardness read-out and the loss-share split of ``mutation_control live``."""

import math

import pytest
import torch

from evos_nerf.core.live_hardness import LiveHardness, loss_share_mutants
from evos_nerf.core.selector import SelectorConfig
from evos_nerf.errors import UserInputError
from test_core_selector import P, Scene, make, run


def test_hardness_is_the_pool_s_mean_error_over_the_rest_s_and_skips_non_finite_errors():
    live = LiveHardness()
    live.add(torch.tensor([True, True, False, False, True]), torch.tensor([4.0, 2.0, 1.0, 2.0, float("nan")]))
    live.add(torch.tensor([False]), torch.tensor([3.0]))
    assert math.isnan(live.hardness)  # nothing agreed before the interval closes
    assert live.take(lambda t: t) == pytest.approx(3.0 / 2.0)  # (4 + 2) / 2 over (1 + 2 + 3) / 3
    assert live.sums.abs().sum() == 0  # the next interval starts empty


def test_an_interval_without_rays_outside_the_pool_keeps_the_last_hardness():
    live = LiveHardness()
    live.add(torch.tensor([True, False]), torch.tensor([2.0, 1.0]))
    live.take(lambda t: t)
    live.add(torch.tensor([True, True]), torch.tensor([9.0, 9.0]))
    assert live.take(lambda t: t) == pytest.approx(2.0)


def test_the_hardness_is_agreed_over_ranks_through_the_reduction():
    """One rank trained only pool rays, the other only mutants: the sum of both sets the ratio."""
    ranks = [LiveHardness(), LiveHardness()]
    ranks[0].add(torch.tensor([True, True]), torch.tensor([3.0, 5.0]))
    ranks[1].add(torch.tensor([False, False]), torch.tensor([1.0, 1.0]))
    total = ranks[0].sums + ranks[1].sums
    assert [r.take(lambda t: total.clone()) for r in ranks] == [pytest.approx(4.0)] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pool_device, error_device", [("cuda", "cpu"), ("cpu", "cuda")])
def test_pool_bits_and_errors_may_live_on_different_devices(pool_device, error_device):
    """Host draws give host membership beside a GPU model's errors (every EVOS step on a GPU), and
    the reverse can happen too: on an H100 this raised a device mismatch before the membership was
    moved to the errors."""
    live = LiveHardness()
    live.add(torch.tensor([True, False], device=pool_device), torch.tensor([2.0, 1.0], device=error_device))
    assert live.take(lambda t: t) == pytest.approx(2.0)


@pytest.mark.parametrize("f, h, rest", [(0.25, 3.0, 0.5), (0.25, 1.0, 0.75), (0.5, 1.0, 0.5), (0.5, 3.0, 0.25),
                                        (1.0, 2.0, 0.0), (0.0, 5.0, 1.0)])
def test_each_side_gets_its_share_of_the_loss(f, h, rest):
    """A pool of f of the pixels, h times harder: its loss share f h / (f h + 1 - f); h = 1 is uniform."""
    assert loss_share_mutants(f, h) == pytest.approx(rest)


@pytest.mark.parametrize("f, h", [(0.5, math.nan), (0.5, -1.0), (1.5, 2.0), (0.5, math.inf)])
def test_unusable_inputs_give_nan_so_the_caller_falls_back(f, h):
    assert math.isnan(loss_share_mutants(f, h))


def test_live_control_splits_the_batch_by_the_measured_loss_shares():
    """A quarter of the pixels have 4x the others' error, which training does not take away: the
    pool (a quarter of the pixels) is exactly those, so the read-out is 4, and the split follows it."""
    base = torch.where(torch.arange(P) % 4 == 0, 4.0, 1.0)
    # Key iterations every 30 steps of 64 rays (at steps 0, 30 and 60): every pixel is measured
    # before the first pool.
    selector = make(batch=64, interval=30, mutation_control="live")
    run(selector, Scene(base, learns=False), 61)
    assert selector.live.hardness == 4.0
    f = 1.0 - selector.num_unselected_total / selector.num_valid_total
    assert f == 0.25
    expected = 0.75 / (0.25 * 4.0 + 0.75)  # the rest's share of the loss: 3/7
    assert selector.mutant_share(61) == pytest.approx(expected)
    assert selector.statistics["pool_hardness"] == 4.0
    sel = selector.select()
    assert sel.num_mutants == int((~selector.pool.contains(sel.flat)).sum()) == round(64 * expected)
    fixed = make(batch=64, interval=30)
    run(fixed, Scene(base, learns=False), 61)
    assert fixed.mutant_share(61) == pytest.approx(0.5)  # the fixed split: m / r_t = 0.25 / 0.5
    assert fixed.statistics["pool_hardness"] == 4.0  # the read-out is there without the control


def test_live_control_keeps_the_fixed_split_until_an_interval_is_measured():
    selector = make(batch=64, mutation_control="live")
    run(selector, Scene(torch.rand(P, generator=torch.Generator().manual_seed(4))), 11)  # first pool at step 10
    assert math.isnan(selector.live.hardness)
    assert selector.mutant_share(11) == pytest.approx(0.5)


def test_a_resumed_run_keeps_the_open_sums_and_selects_identically():
    a = make(mutation_control="live")
    run(a, Scene(torch.rand(P, generator=torch.Generator().manual_seed(7))), 25)
    state = {k: v.clone() for k, v in a.sharded_state().items()}
    b = make(mutation_control="live")
    b.load_sharded_state(state, same_world_size=True)
    assert b.live.hardness == a.live.hardness and torch.equal(a.live.sums, b.live.sums)
    for step in range(25, 32):  # across the key iteration at step 30
        for s in (a, b):
            s.maybe_evolve(step)
        sa, sb = a.select(), b.select()
        assert torch.equal(sa.flat, sb.flat)
        errors = torch.rand(32, generator=torch.Generator().manual_seed(step))
        a.observe(sa.flat, errors, step)
        b.observe(sb.flat, errors, step)
    assert a.live.hardness == b.live.hardness


def test_a_resume_on_another_world_size_keeps_the_agreed_hardness_but_not_the_open_sums():
    """The per-rank entries are not read on another world size; the agreed value is the same on every
    rank, so it comes back from its shared entry and the live split does not fall back to the fixed one."""
    a = make(batch=64, interval=30, mutation_control="live")
    run(a, Scene(torch.where(torch.arange(P) % 4 == 0, 4.0, 1.0), learns=False), 75)  # measured over steps 30-59, open since 60
    assert a.live.hardness == 4.0 and a.live.sums.abs().sum() > 0
    b = make(batch=64, interval=30, mutation_control="live")
    b.load_sharded_state({k: v.clone() for k, v in a.sharded_state().items() if "/rank" not in k}, same_world_size=False)
    assert b.live.hardness == 4.0 and b.live.sums.abs().sum() == 0
    assert b.mutant_share(75) == pytest.approx(a.mutant_share(75)) == pytest.approx(3 / 7)


def test_a_checkpoint_from_before_the_shared_entry_still_loads():
    a = make(mutation_control="live")
    run(a, Scene(torch.rand(P, generator=torch.Generator().manual_seed(7))), 25)
    state = {k: v.clone() for k, v in a.sharded_state().items() if k != "selector/pool_hardness"}
    b = make(mutation_control="live")
    b.load_sharded_state(state, same_world_size=False)
    assert math.isnan(b.live.hardness)


def test_live_control_is_refused_for_strategies_without_mutants():
    with pytest.raises(UserInputError, match="mutation-control live needs strategy evos"):
        SelectorConfig(strategy="topk", mutation_control="live").validate("")


def test_the_read_out_alone_does_not_change_which_pixels_are_trained():
    """Every evos run keeps the read-out; under the fixed split it must only watch."""
    runs = []
    for keep in (True, False):
        selector = make(batch=64)
        if not keep:
            selector.live = None
        runs.append(torch.cat(run(selector, Scene(torch.rand(P, generator=torch.Generator().manual_seed(3))), 60)))
    assert torch.equal(*runs)
