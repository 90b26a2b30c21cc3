"""Framework-free EVOS core: schedules, crossover, mutation and the cached ranking.

Nothing here imports nerfstudio; the image trainer, the nerfstudio sampler and the distributed
store all build on these functions.
"""

from evos_nerf.core.evolution import Evolution, EvolutionConfig, StepPlan
from evos_nerf.core.laplacian import DEFAULT_LAMBDA, gray_255, laplacian, laplacian_fitness, laplacian_of_rgb
from evos_nerf.core.schedules import (
    check_ratio,
    is_key_iteration,
    key_interval,
    key_iterations,
    mutation_ratio,
    next_key_iteration,
    parent_count,
    sample_ratio,
    split_counts,
)
from evos_nerf.core.selection import (
    Offspring,
    adaptive_balance,
    crossover,
    crossover_score,
    membership,
    mutate,
    top_k,
)
from evos_nerf.core.threshold import top_k_mask

__all__ = [
    "DEFAULT_LAMBDA",
    "Evolution",
    "EvolutionConfig",
    "Offspring",
    "StepPlan",
    "adaptive_balance",
    "check_ratio",
    "crossover",
    "crossover_score",
    "gray_255",
    "is_key_iteration",
    "key_interval",
    "key_iterations",
    "laplacian",
    "laplacian_fitness",
    "laplacian_of_rgb",
    "membership",
    "mutate",
    "mutation_ratio",
    "next_key_iteration",
    "parent_count",
    "sample_ratio",
    "split_counts",
    "top_k",
    "top_k_mask",
]
