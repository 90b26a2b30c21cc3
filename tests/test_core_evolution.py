import torch

from evos_nerf.core import Evolution, EvolutionConfig, membership


def _evolution(seed=0, n=1000, total=5000, **kw):
    return Evolution(EvolutionConfig(**kw), n, total, torch.Generator().manual_seed(seed))


def test_first_iteration_is_a_full_key_step():
    plan = _evolution().plan(1)
    assert plan.key and plan.indices is None


def test_non_key_batch_is_survivors_plus_disjoint_mutants():
    evo = _evolution()
    fitness = torch.rand(1000, generator=torch.Generator().manual_seed(5))
    evo.evolve(1, fitness, torch.rand(1000))
    plan = evo.plan(2)
    assert not plan.key
    assert (plan.num_selected, plan.num_mutants) == (250, 250)
    assert plan.indices.unique().numel() == 500
    survivors, mutants = plan.indices[:250], plan.indices[250:]
    assert set(survivors.tolist()) == set(evo.elite.tolist())
    assert not bool(membership(survivors, 1000)[mutants].any())


def test_top_fitness_samples_survive_without_crossover():
    evo = _evolution(crossover="none")
    fitness = torch.arange(1000, dtype=torch.float32)
    evo.evolve(1, fitness, None)
    assert set(evo.plan(2).indices[:250].tolist()) == set(range(750, 1000))


def test_same_seed_gives_the_same_selection_and_another_seed_does_not():
    fitness, hf = torch.rand(1000, generator=torch.Generator().manual_seed(9)), torch.rand(1000)
    runs = []
    for seed in (0, 0, 1):
        evo = _evolution(seed)
        evo.evolve(1, fitness, hf)
        runs.append(torch.cat([evo.plan(t).indices for t in range(2, 6)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_step_scheduler_pads_survivors_when_the_ratio_grows_before_the_next_key():
    # T = 1000: key iterations 1, 96, 191, ...; the step scheduler moves r from 0.2 to 0.28 at t = 100.
    evo = _evolution(n=1000, total=1000, ratio=0.2, ratio_schedule="step", crossover="none")
    assert evo.is_key(96) and not evo.is_key(150)
    fitness = torch.arange(1000, dtype=torch.float32)
    evo.evolve(96, fitness, None)
    assert evo.elite.numel() == 100
    plan = evo.plan(150)
    assert (plan.num_selected, plan.num_mutants) == (180, 100)
    # Padding takes the next-best by L2 error: the top 180 overall.
    assert set(plan.indices[:180].tolist()) == set(range(820, 1000))
    assert plan.indices.unique().numel() == 280


def test_state_dict_round_trip_reproduces_the_next_selection():
    fitness = torch.rand(1000, generator=torch.Generator().manual_seed(4))
    evo = _evolution(seed=3)
    evo.evolve(1, fitness, torch.rand(1000))
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in evo.state_dict().items()}
    expected = evo.plan(2).indices
    restored = _evolution(seed=99)
    restored.load_state_dict(state)
    assert torch.equal(restored.plan(2).indices, expected)
