"""The sampled-threshold top-k against torch.topk, membership bits, and the unordered crossover."""

import numpy as np
import pytest
import torch

from evos_nerf.core import threshold
from evos_nerf.core.bits import bits_at, bits_of_indices, pack_bits, unpack_bits
from evos_nerf.core.selection import LARGE_TOP_K, crossover, top_k
from evos_nerf.core.threshold import top_k_mask


def _same_values(mask: torch.Tensor, values: torch.Tensor, k: int) -> bool:
    """The marked values are exactly torch.topk's values (the set up to the choice among ties)."""
    return torch.equal(torch.sort(values[mask]).values, torch.sort(torch.topk(values, k).values).values)


@pytest.mark.parametrize("n", [50, 5000, 400_000])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_mask_marks_a_top_k_set_of_exactly_k(n, ties):
    gen = torch.Generator().manual_seed(n)
    values = torch.rand(n, generator=gen)
    if ties:
        values = (values * 20).round()  # 21 distinct values: the k-th is heavily tied
    values[torch.rand(n, generator=gen) < 0.1] = float("-inf")  # masked pixels
    for k in (1, n // 7, n // 4, n // 2, n - n // 10):
        mask = top_k_mask(values, k, generator=gen)
        assert int(mask.sum()) == k
        assert _same_values(mask, values, k)


def test_top_k_mask_breaks_ties_uniformly_at_random():
    values = torch.zeros(300_000)
    values[:1000] = 1.0
    counts = torch.zeros(300_000)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        counts += top_k_mask(values, 150_500, generator=gen)
    assert bool((counts[:1000] == 10).all())
    tied = counts[1000:] / 10  # each of the 299,000 tied zeros is chosen with probability 0.5
    assert abs(float(tied.mean()) - 0.5) < 0.005 and float(tied[:100_000].mean()) == pytest.approx(0.5, abs=0.01)
    plain = top_k_mask(values, 150_500)  # without a generator: lowest indices first, deterministic
    assert bool(plain[:150_500].all()) and not bool(plain[150_500:].any())


def test_top_k_mask_within_a_subset_and_with_nan_and_half_precision():
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(300_000, generator=gen)
    within = torch.rand(300_000, generator=gen) < 0.3
    mask = top_k_mask(values, 10_000, within=within)
    assert int(mask.sum()) == 10_000 and not bool((mask & ~within).any())
    assert _same_values(mask, torch.where(within, values, torch.tensor(float("-inf"))), 10_000)
    values[:100] = float("nan")
    mask = top_k_mask(values.half(), 299_950)  # only 299,900 values are not NaN
    assert int(mask.sum()) == 299_900 and not bool(mask[:100].any())


def test_a_missed_bracket_is_widened_until_the_set_is_exact(monkeypatch):
    monkeypatch.setattr(threshold, "SAMPLE_SIZE", 64)  # a tiny sample: the first brackets miss
    values = torch.rand(300_000, generator=torch.Generator().manual_seed(2)) ** 8
    for k in (3, 150_000, 299_990):
        mask = top_k_mask(values, k)
        assert int(mask.sum()) == k and _same_values(mask, values, k)


def test_top_k_of_large_inputs_is_torch_topk_up_to_ties():
    values = torch.rand(LARGE_TOP_K + 123, generator=torch.Generator().manual_seed(3))
    k = values.numel() // 5
    expected = torch.topk(values, k).indices
    ordered = top_k(values, k)
    assert torch.equal(values[ordered], values[expected])  # largest first, the same values
    assert torch.equal(top_k(values, k, ordered=False), torch.sort(expected).values)
    small = torch.rand(1000)
    assert torch.equal(top_k(small, 10, ordered=False), torch.sort(torch.topk(small, 10).indices).values)


@pytest.mark.parametrize("method", ["select", "add", "none"])
def test_unordered_crossover_selects_the_ordered_crossover_s_set(method):
    gen = torch.Generator().manual_seed(4)
    e = torch.rand(500_000, generator=gen)
    l = torch.rand(500_000, generator=gen) * e  # correlated parents: a real intersection
    for k in (1000, 125_000):
        ordered = crossover(e, l, k, method, balance=0.3)
        unordered = crossover(e, l, k, method, balance=0.3, ordered=False, generator=gen)
        assert torch.equal(torch.sort(ordered.indices).values, unordered.indices)
        assert (ordered.num_shared, ordered.balance) == (unordered.num_shared, unordered.balance)


def test_membership_bits_round_trip_like_numpy_packbits():
    for n in (1, 7, 8, 9, 1000, 12345):
        mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3
        packed = pack_bits(mask)
        assert np.array_equal(packed.numpy(), np.packbits(mask.numpy(), bitorder="little"))
        assert torch.equal(unpack_bits(packed, n), mask)
        assert torch.equal(bits_of_indices(mask.nonzero().squeeze(1), n), packed)
        probe = torch.randint(0, n, (50,))
        assert torch.equal(bits_at(packed, probe), mask[probe])
