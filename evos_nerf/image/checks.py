"""Checks of ``evos-image fit``'s flags, run before any image is loaded or any network is built.

Each message names the flag as the user typed it and the value given, so a bad value ends in one
line instead of a traceback from deep in torch (or, worse, a run that trains on NaN and blames
the learning rate). Ranges that the core already defines (ratios in (0, 1]) are restated here
only to name the flag; ``EvolutionConfig.validate`` still runs after them.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Optional, Sequence

import torch

from evos_nerf.core import Evolution, EvolutionConfig
from evos_nerf.errors import UserInputError
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.signal import ImageSignal

MAX_LOG2_HASHMAP_SIZE = 24
"""2^24 entries per level is instant-NGP's largest table; 40 would ask for ~140 TB."""
MIN_SIREN_DEPTH = 2
"""SIREN's first sine layer plus its linear output layer."""
MIN_RESOLUTION = 8
MAX_RESOLUTION = 16384
"""Longest side: 16384^2 pixels are 3 GiB of float32 RGB before any model or fitness state."""
EVOS_STRATEGIES = ("evos", "evos-nocfs")


def _flag(prefix: str, name: str) -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _require(ok: bool, flag: str, value: object, expected: str) -> None:
    if not ok:
        raise UserInputError(f"{flag} must be {expected}, got {value}")


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


def check_strategies(strategies: Sequence[str]) -> None:
    """At least one, none twice: two runs of one strategy would share one folder and one seed."""
    if not strategies:
        raise UserInputError("--strategies is empty; name at least one (e.g. --strategies evos uniform)")
    for name in strategies:
        if strategies.count(name) > 1:
            raise UserInputError(
                f"--strategies lists {name} {strategies.count(name)} times; each strategy runs once per image "
                "(same seed, so a repeat would be the same run)"
            )


def check_backbone(config: BackboneConfig) -> None:
    _require(config.width >= 1, "--backbone.width", config.width, ">= 1")
    min_depth = MIN_SIREN_DEPTH if config.kind == "siren" else 1
    why = " for siren (first sine layer + linear output)" if config.kind == "siren" else ""
    _require(config.depth >= min_depth, "--backbone.depth", config.depth, f">= {min_depth}{why}")
    if config.lr is not None:
        _require(_positive_finite(config.lr), "--backbone.lr", config.lr, "a positive finite number")
    _require(_positive_finite(config.omega0), "--backbone.omega0", config.omega0, "a positive finite number")
    _require(config.num_levels >= 1, "--backbone.num-levels", config.num_levels, ">= 1")
    _require(
        1 <= config.log2_hashmap_size <= MAX_LOG2_HASHMAP_SIZE,
        "--backbone.log2-hashmap-size",
        config.log2_hashmap_size,
        f"in [1, {MAX_LOG2_HASHMAP_SIZE}] (2^{MAX_LOG2_HASHMAP_SIZE} entries per level is instant-NGP's largest)",
    )
    _require(config.features_per_level >= 1, "--backbone.features-per-level", config.features_per_level, ">= 1")


def check_evos(config: EvolutionConfig) -> None:
    """Every float finite (NaN passes `< 0` tests silently), then the ranges, naming each flag."""
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserInputError(f"{_flag('evos.', item.name)} must be a finite number, got {value}")
    _require(0.0 < config.ratio <= 1.0, "--evos.ratio", config.ratio, "in (0, 1]")
    for name in ("init_mutation", "end_mutation"):
        value = getattr(config, name)
        _require(0.0 <= value <= 1.0, _flag("evos.", name), value, "in [0, 1]")
    for name in ("init_interval", "end_interval"):
        _require(getattr(config, name) >= 1, _flag("evos.", name), getattr(config, name), ">= 1")
    for name in ("crossover_lambda", "cfs_weight"):
        _require(getattr(config, name) >= 0.0, _flag("evos.", name), getattr(config, name), ">= 0")
    config.validate()


def check_run(iterations: int, log_every: int, resolution: Optional[int]) -> None:
    _require(iterations >= 1, "--iterations", iterations, ">= 1")
    _require(log_every >= 1, "--log-every", log_every, ">= 1")
    if resolution is not None:
        _require(MIN_RESOLUTION <= resolution <= MAX_RESOLUTION, "--resolution", resolution,
                 f"between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels (the longer side)")


def check_evos_budget(signal: ImageSignal, strategies: Sequence[str], config: EvolutionConfig, iterations: int) -> None:
    """Refuse a ratio that leaves EVOS no pixel (no survivor and no mutant) on some non-key step.

    Such a step is either a mean over nothing (a NaN loss, which used to be blamed on the learning
    rate) or, following the official code's ``x[-0:]``, a silent full-image step: in both cases the
    ratio is too small for the image. The counts come from the core's own split (survivors +
    mutants, each floored), so a ratio × pixels just above 1 that still floors to nothing is caught.
    """
    if not any(name in EVOS_STRATEGIES for name in strategies):
        return
    n = signal.num_samples
    evolution = Evolution(config, n, iterations, torch.Generator())
    for t in range(1, iterations + 1):
        if evolution.is_key(t):
            continue
        selected, mutants = evolution.counts(t)
        if selected + mutants == 0:
            raise UserInputError(
                f"--evos.ratio {config.ratio} leaves EVOS no pixel to train on {signal.name} "
                f"({signal.width}x{signal.height} = {n} pixels): ratio × pixels = {config.ratio * n:.3g}, "
                f"{selected} selected + {mutants} mutants at step {t}; raise --evos.ratio or --resolution"
            )
