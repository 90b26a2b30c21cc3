import pytest
import torch

from evos_nerf.core import adaptive_balance, crossover, laplacian, membership, mutate

E = torch.tensor([10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1])
L = torch.tensor([100.0, 90, 0, 0, 0, 0, 0, 70, 80, 95])


def test_crossover_keeps_the_intersection_and_fills_from_both_parents():
    # Parents for k = 4: by e {0,1,2,3}, by l {0,9,1,8}; shared {0,1}; remainder 2 split 1:1 at p = 0.5.
    out = crossover(E, L, 4, "select", balance=0.5)
    assert out.num_shared == 2
    assert out.indices.tolist() == [0, 1, 2, 9]


def test_crossover_balance_is_mean_error_share():
    assert adaptive_balance(E, L) == pytest.approx(5.5 / (5.5 + 43.5))
    out = crossover(E, L, 4, "select")
    # p = 0.112: floor(2 * p) = 0 picks from the e-only side, so both remaining picks come from l.
    assert out.balance == adaptive_balance(E, L)
    assert sorted(out.indices.tolist()) == [0, 1, 8, 9]


def test_zero_pick_guard_never_over_selects():
    # The reference's x[-0:] slice returns the whole tensor when one side gets zero picks.
    for p in (0.0, 1.0, 0.112):
        out = crossover(E, L, 4, "select", balance=p)
        assert out.indices.numel() == 4
        assert out.indices.unique().numel() == 4
    assert crossover(E, L, 4, "select", balance=1.0).indices.tolist() == [0, 1, 2, 3]


def test_crossover_add_and_none_rank_by_their_scores():
    assert crossover(E, L, 3, "none").indices.tolist() == [0, 1, 2]
    assert crossover(E, L, 3, "add").indices.tolist() == [0, 1, 9]


def test_crossover_with_identical_parents_is_just_top_k():
    out = crossover(E, E.clone(), 5, "select")
    assert out.num_shared == 5
    assert out.indices.tolist() == [0, 1, 2, 3, 4]


def test_mutation_picks_only_unselected_samples_without_repeats():
    g = torch.Generator().manual_seed(0)
    excluded = membership(torch.arange(50), 100)
    picks = mutate(100, 30, excluded, g)
    assert picks.numel() == 30
    assert picks.unique().numel() == 30
    assert bool((picks >= 50).all())


def test_mutation_rejection_path_on_a_large_pool_excludes_selected():
    n = 1 << 21
    g = torch.Generator().manual_seed(1)
    excluded = torch.rand(n, generator=g) < 0.5
    picks = mutate(n, 4096, excluded, g)
    assert picks.numel() == 4096
    assert picks.unique().numel() == 4096
    assert not bool(excluded[picks].any())


def test_mutation_is_uniform_over_the_unselected():
    g = torch.Generator().manual_seed(2)
    excluded = membership(torch.tensor([0, 1, 2, 3, 4]), 10)
    counts = torch.zeros(10)
    for _ in range(4000):
        counts[mutate(10, 2, excluded, g)] += 1
    assert counts[:5].sum() == 0
    assert torch.allclose(counts[5:] / 4000, torch.full((5,), 0.4), atol=0.04)


def test_mutation_caps_at_the_pool_size():
    g = torch.Generator().manual_seed(3)
    picks = mutate(10, 50, membership(torch.arange(7), 10), g)
    assert sorted(picks.tolist()) == [7, 8, 9]


def test_laplacian_of_a_point_and_zero_padding():
    img = torch.zeros(5, 5)
    img[2, 2] = 1.0
    lap = laplacian(img)
    assert lap[2, 2] == -4 and lap[1, 2] == 1 and lap[2, 1] == 1 and lap[0, 0] == 0
    flat = laplacian(torch.full((4, 4), 2.0))
    assert flat[0, 0] == -4.0  # corner: two zero-padded neighbours
    assert flat[1, 1] == 0.0


def test_rejection_sampling_path_is_uniform_too():
    # 10 draws from a pool of 500 takes the O(n) rejection path.
    g = torch.Generator().manual_seed(4)
    excluded = membership(torch.arange(500), 1000)
    counts = torch.zeros(1000)
    for _ in range(2000):
        picks = mutate(1000, 10, excluded, g, num_excluded=500)
        assert picks.unique().numel() == 10
        counts[picks] += 1
    assert counts[:500].sum() == 0
    per_pixel = counts[500:] / 2000  # expected 10 / 500 = 0.02
    assert abs(float(per_pixel.mean()) - 0.02) < 1e-6
    assert float(per_pixel.std()) < 0.006
