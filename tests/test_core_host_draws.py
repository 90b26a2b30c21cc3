"""On a GPU store a step's draw runs on the host and its write-back reads nothing back (issue 13's
overhead target: per step a GPU store paid 13 waits and 17 copies between host and device).

There is no GPU here, so the GPU side is played by a CPU store whose device copies are made
unusable: the draw must then give exactly what a plain CPU store gives, from host copies alone."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from evos_nerf.core.bits import unpack_bits
from evos_nerf.core.pool import CandidatePool
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore

H, W, N = 12, 16, 5

HOST_READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
              "aten::unique_dim", "aten::is_nonzero", "aten::equal", "a copy between devices"}
"""Ops that on a GPU read a value or a size back, or copy: each waits for every queued kernel."""


class Untouchable(torch.Tensor):
    """A device copy a host draw must not use."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"a host draw used the pool's device copy ({getattr(func, '__name__', func)})")


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if name in ("aten::_to_copy", "aten::copy_") and args[0].device != (out if name == "aten::_to_copy" else args[1]).device:
            name = "a copy between devices"
        self.names.append(name)
        return out


def _selector(**kw) -> RaySelector:
    store = FitnessStore([(H, W)] * N, track_visits=True)
    config = SelectorConfig(init_interval=10, end_interval=10, **kw)
    selector = RaySelector(config, store, 64, torch.Generator().manual_seed(0), 120)
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[:4, :6] = False
    selector.initialise(list(torch.rand(N, H, W, 3, generator=gen)), masks=[None, mask, None, None, mask])
    return selector


def _train(selector: RaySelector, steps: int = 60) -> list:
    base = torch.rand(N * H * W, generator=torch.Generator().manual_seed(2)) + 0.01
    drawn = []
    for step in range(steps):
        selector.maybe_evolve(step, lambda cyx: base[cyx[:, 0] * H * W + cyx[:, 1] * W + cyx[:, 2]])
        selection = selector.select()
        assert selection.flat.device.type == "cpu"
        drawn.append(selection.flat.clone())
        errors = base[selection.flat].clone()
        base[selection.flat] *= 0.8
        selector.observe(selection.flat, errors, step, uniform=selection.uniform)
    return drawn


@pytest.mark.parametrize("config", [
    dict(ratio_schedule="step"),  # the default on real captures: a dense pool
    dict(ratio=0.05, mutation=0.2),  # a sparse pool (members listed)
    dict(strategy="uniform"),
    dict(strategy="errormap"),
], ids=["evos", "sparse-pool", "uniform", "errormap"])
def test_a_gpu_store_draws_from_host_copies_what_a_cpu_store_draws(monkeypatch, config):
    plain = _train(_selector(**config))
    monkeypatch.setattr(FitnessStore, "on_host", property(lambda self: False))  # masks: from host bits
    build = CandidatePool.__init__

    def device_copies_unusable(self, store, pool):
        build(self, store, pool)
        self.bits = self.bits.as_subclass(Untouchable)
        if self.sparse_members is not None:
            self.sparse_members = self.sparse_members.as_subclass(Untouchable)

    monkeypatch.setattr(CandidatePool, "__init__", device_copies_unusable)
    on_gpu = _selector(**config)
    assert all(torch.equal(a, b) for a, b in zip(plain, _train(on_gpu)))
    store = on_gpu.store  # the host mask bits the draws used are the store's masked pixels
    assert torch.equal(unpack_bits(store._host_invalid_bits(), store.num_pixels), torch.isnan(store.fitness))


def test_the_write_back_reads_nothing_back_and_keeps_each_pixels_last_finite_error(monkeypatch):
    store = FitnessStore([(2, 4)] * 2, dtype=torch.float32, track_visits=True, track_uniform=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 0] = False  # pixel 8 (image 1) is masked out
    store.initialise([torch.rand(2, 4, 3), torch.rand(2, 4, 3)], masks=[None, mask])
    seen = Ops()
    write = FitnessStore._write

    def recorded(self, *args, **kwargs):
        with seen:
            return write(self, *args, **kwargs)

    monkeypatch.setattr(FitnessStore, "_write", recorded)
    flat = torch.tensor([3, 1, 3, 8, 5, 5, 6])
    errors = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, float("nan"), float("inf")])
    skipped = store.update(flat, errors, uniform=torch.ones(7, dtype=torch.bool))
    assert seen.names and not HOST_READS.intersection(seen.names), sorted(HOST_READS.intersection(seen.names))
    assert skipped.dim() == 0 and int(skipped) == 2 and store.num_skipped == 2
    # 3 keeps its last error; 5 its last finite one; 6 (inf) and masked 8 are left as they were.
    assert store.fitness[[1, 3, 5]].tolist() == pytest.approx([0.2, 0.3, 0.5])
    assert store.fitness[6] == 0 and torch.isnan(store.fitness[8]) and store.epoch[6] == 0
    assert store.visits[[1, 3, 5, 6, 8]].tolist() == [1, 2, 1, 0, 0]
    assert store.num_measured == 3 and store.epoch_count == 4
    assert store.epoch_sum == pytest.approx(0.1 + 0.2 + 0.3 + 0.5)
    assert store.uniform[:, 0, 1].tolist() == [4.0, 0.0]  # image 0's four kept rays; image 1's all dropped


def test_soft_minings_draw_between_rebuilds_reads_nothing_back_and_caps_the_weights_at_mean_plus_std():
    """Soft Mining draws on the store's device (its CDF is built there every 10 steps); the weight
    cap was a float() of the batch's mean + std, a wait for the GPU at every step."""
    selector = _selector(strategy="softmining", softmining_warmup=10)
    _train(selector, 25)  # rebuilt at 0, 10, 20; the weight exponent at its full 0.8
    with Ops() as seen:
        selection = selector.select()
    assert seen.names and not HOST_READS.intersection(seen.names), sorted(HOST_READS.intersection(seen.names))
    soft = selector.softmining
    raw = (soft.store.num_valid * soft.probability[selection.flat]).pow(-0.8)
    cap = raw.mean() + raw.std()
    assert bool((raw > cap).any())  # the cap bites in this batch
    assert torch.equal(selection.weights, raw.clamp(max=float(cap)).float())


def test_the_error_maps_splat_leaves_the_losses_on_their_device_and_adds_nothing_for_a_non_finite_one():
    """instant-ngp's map is summed where the model's losses are; it was summed on the host, which
    read every step's losses back from a GPU. A meta map stands in for the GPU: nothing can be read
    back from it, so a splat that tried would raise."""
    selector = _selector(strategy="errormap")
    _train(selector, 5)
    emap = selector.errormap
    flat = selector.select().flat
    kept = emap.errors.clone()
    emap.errors = torch.zeros_like(kept, device="meta")
    with Ops() as seen:
        emap.observe(flat, torch.rand(flat.numel(), device="meta"))
    assert "aten::index_add_" in seen.names and emap.errors.device.type == "meta"
    emap.errors = kept.clone()  # on the host: a NaN or inf loss adds nothing, finite ones are splatted
    errors = torch.rand(flat.numel(), generator=torch.Generator().manual_seed(3))
    emap.observe(flat[:10], errors[:10])
    only_finite = emap.errors.clone()
    emap.errors = kept.clone()
    emap.observe(torch.cat([flat[:10], flat[10:14]]), torch.cat([errors[:10], torch.tensor([float("nan"), float("inf"), -float("inf"), float("nan")])]))
    assert torch.equal(emap.errors, only_finite) and not torch.equal(only_finite, kept)
