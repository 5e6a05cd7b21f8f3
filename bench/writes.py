"""e. What the triggers cost writers: test_scenarios inserts/s with triggers on vs off.

8 writer threads, each with its own connection, one single-row INSERT per transaction
(autocommit). Rounds alternate off/on so that a neighbour's load on this shared machine
hits both sides alike.

The headline ratio is the writers' own cost (trigger, scenario_events row, the NOTIFY
check) with no listener running. A second figure runs a real listener draining the
backlog at the same time, on the same two cores: writers then meet an empty backlog now
and then (and NOTIFY), and the listener's fan-out work takes CPU from them.

Both figures come with the share of writes that sent a NOTIFY (counted by a LISTEN
session of the bench's own): the wake rule of the triggers (notify unless a waiting event
is younger than 100 ms, or another was written within 100 ms) is what keeps it low, and
the listener-less rounds are its worst case, an old backlog at every write.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.env import BenchServer, connect, listener_process


def _writer(url: str, until: float, start: threading.Barrier, counts: list[int]) -> None:
    with connect(url) as conn:
        n = 0
        start.wait()
        while time.perf_counter() < until:
            conn.execute("INSERT INTO test_scenarios (name) VALUES ('w')")
            n += 1
        counts.append(n)


def throughput(url: str, writers: int, seconds: float) -> float:
    counts: list[int] = []
    barrier = threading.Barrier(writers + 1)
    until = time.perf_counter() + seconds + 1.0  # connections open within that second
    threads = [
        threading.Thread(target=_writer, args=(url, until, barrier, counts)) for _ in range(writers)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def _notifies(listen: Any) -> int:
    """NOTIFYs received since the last call (one per notifying transaction)."""
    return sum(1 for _ in listen.notifies(timeout=0.5))


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    url = server.fresh_database("writes")
    writers = 8
    seconds = 3.0 if quick else 10.0
    rounds = 1 if quick else 3
    off: list[float] = []
    on: list[float] = []
    with_listener: list[float] = []
    notified = {"on": 0, "with_listener": 0}
    written = {"on": 0.0, "with_listener": 0.0}
    with connect(url) as conn, connect(url) as listen:
        listen.execute("LISTEN scenario_events")
        throughput(url, writers, 1.0)  # warm-up
        for _ in range(rounds):
            conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
            off.append(throughput(url, writers, seconds))
            conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
            _notifies(listen)
            on.append(throughput(url, writers, seconds))
            notified["on"] += _notifies(listen)
            written["on"] += on[-1] * seconds
    # A database of its own, so that the listener does not start on the backlog the
    # listener-less rounds above left behind: this is the steady state.
    url = server.fresh_database("writes_listener")
    with listener_process(url, log), connect(url) as listen:
        listen.execute("LISTEN scenario_events")
        throughput(url, writers, 1.0)  # warm-up
        for _ in range(rounds):
            _notifies(listen)
            with_listener.append(throughput(url, writers, seconds))
            notified["with_listener"] += _notifies(listen)
            written["with_listener"] += with_listener[-1] * seconds
    return {
        "writers": writers,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "off_per_s": off,
        "on_per_s": on,
        "off_median": statistics.median(off),
        "on_median": statistics.median(on),
        "ratio": statistics.median(on) / statistics.median(off),
        "with_listener_per_s": with_listener,
        "with_listener_ratio": statistics.median(with_listener) / statistics.median(off),
        # Share of writes that sent a NOTIFY (about: writes counted from the rate).
        "notify_share_on": notified["on"] / max(written["on"], 1.0),
        "notify_share_with_listener": notified["with_listener"]
        / max(written["with_listener"], 1.0),
    }
