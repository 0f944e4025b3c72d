"""Latency measurement: interleaved rounds over several sessions, medians and per-round times."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def interleaved_medians(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 7,
    calls: int = 10,
    warmup: int = 2,
) -> list[float]:
    """Median seconds per call of each session, measured in interleaved rounds.

    Each round times ``calls`` consecutive runs of every session in turn, so slow drifts of
    the machine hit all sessions alike.

    Args:
        sessions: onnxruntime sessions.
        feeds: one feed dict for all sessions, or one per session.
        rounds: timed rounds.
        calls: runs per session per round.
        warmup: untimed runs of each session first.

    Returns:
        Median seconds per call, one per session.
    """
    times = interleaved_times(sessions, feeds, rounds=rounds, calls=calls, warmup=warmup)
    return [float(np.median(t)) for t in times]


def interleaved_times(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 7,
    calls: int = 10,
    warmup: int = 2,
) -> list[list[float]]:
    """Seconds per call of each session in each interleaved round (see :func:`interleaved_medians`).

    Anything with ``run(None, feed)`` can be timed (an MNN module behind an adapter too).
    Per-round ratios (``times[i][r] / times[0][r]``) cancel drifts of the machine that a
    ratio of medians keeps.

    Returns:
        ``times[session][round]``.
    """
    per_session = [feeds] * len(sessions) if isinstance(feeds, Mapping) else list(feeds)
    for session, feed in zip(sessions, per_session, strict=True):
        for _ in range(warmup):
            session.run(None, dict(feed))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for position, (session, feed) in enumerate(zip(sessions, per_session, strict=True)):
            feed = dict(feed)
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            times[position].append((time.perf_counter() - start) / calls)
    return times
