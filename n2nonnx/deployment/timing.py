"""Latency measurement: interleaved rounds over several sessions, medians per session."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def interleaved_times(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 7,
    calls: int = 10,
    warmup: int = 2,
) -> list[list[float]]:
    """Seconds per call of each session in each round, measured in interleaved rounds.

    Each round times ``calls`` consecutive runs of every session in turn, so slow drifts of
    the machine hit all sessions alike.

    Args:
        sessions: onnxruntime sessions.
        feeds: one feed dict for all sessions, or one per session.
        rounds: timed rounds.
        calls: runs per session per round.
        warmup: untimed runs of each session first.

    Returns:
        Per session, its seconds per call in each round.
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


def ratio_medians(times: Sequence[Sequence[float]], base: int = 0) -> list[float]:
    """Per session: the median over rounds of its time divided by session ``base``'s that round."""
    reference = np.asarray(times[base])
    return [float(np.median(np.asarray(t) / reference)) for t in times]


def interleaved_medians(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 7,
    calls: int = 10,
    warmup: int = 2,
) -> list[float]:
    """Median seconds per call of each session, in interleaved rounds (:func:`interleaved_times`)."""
    times = interleaved_times(sessions, feeds, rounds=rounds, calls=calls, warmup=warmup)
    return [float(np.median(t)) for t in times]
