"""The stateful part of EVOS for dense signals: a cached ranking refreshed at key iterations.

Between key iterations EVOS trains on the cached fittest samples plus fresh mutants. This class
owns that cache and nothing else; computing fitness maps (and training) is the caller's job, so
any trainer that can produce a per-sample error at key iterations can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from evos_nerf.core import schedules
from evos_nerf.core.laplacian import DEFAULT_LAMBDA
from evos_nerf.core.selection import CrossoverMethod, Offspring, crossover, crossover_score, membership, mutate, top_k
from evos_nerf.errors import UserInputError


@dataclass
class EvolutionConfig:
    """EVOS hyperparameters; the defaults are the official code's (Table 1, constant scheduler)."""

    ratio: float = 0.5
    """Initial sample ratio r0: share of all samples trained per step."""
    ratio_schedule: schedules.SampleRatioSchedule = "constant"
    """How r_t evolves: constant, step (10 stages up to 1), linear or cosine."""
    key_schedule: schedules.KeyIterationSchedule = "lin_dec"
    """Sparse fitness evaluation: lin_dec shrinks the interval from init_interval to end_interval."""
    init_interval: int = 100
    end_interval: int = 50
    crossover: CrossoverMethod = "select"
    """Frequency-guided crossover: select (paper), add (e + l) or none (L2 only)."""
    crossover_lambda: float = DEFAULT_LAMBDA
    """lambda scaling the Laplacian fitness in the crossover (the code keeps 1e-5 even without CFS)."""
    cfs_weight: float = DEFAULT_LAMBDA
    """Weight of the cross-frequency supervision loss; 0 disables CFS (the paper's 'w/o CFS')."""
    cfs_until: int = 1500
    """CFS also runs on non-key iterations while t <= cfs_until (the code's use_laplace_epoch)."""
    mutation_schedule: schedules.MutationSchedule = "constant"
    init_mutation: float = 0.5
    """alpha at t = 0: mutants are alpha * base of all samples."""
    end_mutation: float = 0.5
    mutation_base: schedules.MutationBase = "initial"
    """initial: alpha * r0 (official code); current: alpha * r_t (paper text)."""
    zero_pick_guard: bool = False
    """Read a count of 0 as "pick none". Off (the default) reproduces the official code, whose
    x[-0:] slices pick everything instead: a crossover side with 0 picks adds its whole parent
    remainder (only when R * p < 1 or p = 1), and 0 survivors at a step trains on every sample."""

    def validate(self) -> "EvolutionConfig":
        schedules.check_ratio("ratio", self.ratio)
        schedules.check_ratio("init_mutation", self.init_mutation, allow_zero=True)
        schedules.check_ratio("end_mutation", self.end_mutation, allow_zero=True)
        if self.init_interval < 1 or self.end_interval < 1:
            raise UserInputError(
                f"key-iteration intervals must be >= 1, got init={self.init_interval} end={self.end_interval}"
            )
        if self.crossover_lambda < 0 or self.cfs_weight < 0:
            raise UserInputError(
                f"crossover_lambda and cfs_weight must be >= 0, got {self.crossover_lambda} and {self.cfs_weight}"
            )
        return self


@dataclass
class StepPlan:
    """What one iteration trains on."""

    t: int
    key: bool
    """Key iteration: train on all samples and refresh fitness."""
    indices: Optional[Tensor]
    """Sample indices to train on; None means all samples."""
    num_selected: int
    num_mutants: int


class Evolution:
    """Cached EVOS ranking for a signal of ``num_samples`` samples trained for ``total`` iterations."""

    def __init__(
        self, config: EvolutionConfig, num_samples: int, total: int, generator: torch.Generator
    ) -> None:
        self.config = config.validate()
        self.num_samples = int(num_samples)
        self.total = int(total)
        self.generator = generator
        self.elite: Optional[Tensor] = None
        """Crossover offspring, fittest first."""
        self.reserve: Optional[Tensor] = None
        """The next samples of the official ranking after the offspring (by e, or e + l for ``add``),
        for steps where r_t grows past the offspring before the next key iteration."""
        self.last_key = 0
        self.last_balance = float("nan")

    # -- schedules ------------------------------------------------------------------------
    def is_key(self, t: int) -> bool:
        c = self.config
        return schedules.is_key_iteration(t, self.total, c.key_schedule, c.init_interval, c.end_interval)

    def ratios(self, t: int) -> tuple[float, float]:
        """(r_t, m) at iteration t: the share trained and the share drawn as mutants."""
        c = self.config
        r_t = schedules.sample_ratio(t, self.total, c.ratio, c.ratio_schedule)
        m = schedules.mutation_ratio(
            t, self.total, c.ratio, r_t, c.mutation_schedule, c.init_mutation, c.end_mutation, c.mutation_base
        )
        return r_t, m

    def counts(self, t: int) -> tuple[int, int]:
        """(survivors, mutants) at non-key iteration t, before the zero-survivor rule of ``plan``."""
        return schedules.split_counts(self.num_samples, *self.ratios(t))

    def parent_count(self, t: int) -> int:
        """Size k' of each crossover parent at key iteration t."""
        return schedules.parent_count(self.num_samples, *self.ratios(t))

    def cfs_active(self, t: int, key: bool) -> bool:
        """CFS runs at every key iteration and, until cfs_until, at the others (EVOS §2.6)."""
        return self.config.cfs_weight > 0 and (key or t <= self.config.cfs_until)

    # -- evolution ------------------------------------------------------------------------
    def evolve(self, t: int, fitness: Tensor, hf_fitness: Optional[Tensor]) -> Offspring:
        """Rank all samples at key iteration t (EVOS §2.4) and cache the result until the next one."""
        if fitness.numel() != self.num_samples:
            raise ValueError(f"fitness has {fitness.numel()} samples, expected {self.num_samples}")
        c = self.config
        offspring = crossover(
            fitness, hf_fitness, self.parent_count(t), c.crossover, zero_pick_guard=c.zero_pick_guard
        )
        # The official code ranks every sample; past the offspring, by e (select, none) or e + l (add).
        # Only the part a step before the next key iteration can reach is kept: with the step
        # scheduler r_t can grow past the offspring.
        upcoming = schedules.next_key_iteration(t, self.total, c.key_schedule, c.init_interval, c.end_interval)
        peak = max((self.counts(s)[0] for s in range(t + 1, min(upcoming, self.total + 1))), default=0)
        pad = max(0, peak - offspring.indices.numel())
        reserve = torch.empty(0, dtype=torch.long, device=fitness.device)
        if pad > 0:
            masked = crossover_score(fitness, hf_fitness, c.crossover).float().clone()
            masked[offspring.indices] = float("-inf")
            reserve = top_k(masked, pad)
        self.elite, self.reserve = offspring.indices, reserve
        self.last_key, self.last_balance = t, offspring.balance
        return offspring

    def plan(self, t: int) -> StepPlan:
        """Training set of iteration t: everything at key iterations, else survivors plus mutants.

        Before the first ``evolve`` there is no ranking, so the step trains on everything as a key
        step (the official code would fail there when t = 1 is not a key iteration).
        """
        if self.is_key(t) or self.elite is None:
            return StepPlan(t, True, None, self.num_samples, 0)
        num_selected, num_mutants = self.counts(t)
        if num_selected == 0 and not self.config.zero_pick_guard:
            # Official: sorted[-0:] selects every sample and leaves none to mutate.
            return StepPlan(t, False, None, self.num_samples, 0)
        survivors = self.elite[:num_selected]
        if num_selected > survivors.numel():
            survivors = torch.cat([survivors, self.reserve[: num_selected - survivors.numel()]])
        excluded = membership(survivors, self.num_samples)
        mutants = mutate(
            self.num_samples, num_mutants, excluded, self.generator, device=survivors.device,
            num_excluded=survivors.numel(),
        )
        return StepPlan(t, False, torch.cat([survivors, mutants]), survivors.numel(), mutants.numel())

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "elite": self.elite,
            "reserve": self.reserve,
            "last_key": self.last_key,
            "last_balance": self.last_balance,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.elite, self.reserve = state["elite"], state["reserve"]
        self.last_key, self.last_balance = int(state["last_key"]), float(state["last_balance"])
        self.generator.set_state(state["generator"])
