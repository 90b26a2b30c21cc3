"""Reading training curves: when a run first reaches a quality, and its value at a given time.

A curve is a list of evaluations ``{step, train_seconds, psnr, ...}`` in training order; the demo
and the NeRF benchmark both read theirs with these, linear between evaluations.
"""

from __future__ import annotations

from typing import Dict, List, Optional


def reach(history: List[Dict[str, float]], target: float, key: str, metric: str = "psnr") -> Optional[float]:
    """``key`` (step or train_seconds) where ``metric`` first reaches ``target`` (None if never)."""
    prev = None
    for h in history:
        if h[metric] >= target:
            if prev is None:
                return float(h[key])
            frac = (target - prev[metric]) / max(h[metric] - prev[metric], 1e-9)
            return prev[key] + frac * (h[key] - prev[key])
        prev = h
    return None


def value_at(history: List[Dict[str, float]], key: str, at: float, metric: str) -> float:
    """``metric`` interpolated at ``key`` == at (clamped to the measured range)."""
    points = [(h[key], h[metric]) for h in history]
    if at <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= at <= x1:
            return y0 + (y1 - y0) * (at - x0) / max(x1 - x0, 1e-12)
    return points[-1][1]
