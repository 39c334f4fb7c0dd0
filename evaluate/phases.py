"""Where an evaluation's time goes: one line per phase while it runs (items, then seconds and rate when it
ends, with a progress line per batch and an ETA inside long generations) and the seconds per phase for
metrics.json."""

from __future__ import annotations

import time
from contextlib import contextmanager


class PhaseClock:
    def __init__(self, progress: bool):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def say(self, line: str) -> None:
        if self.progress:
            print(f"evaluate: {line}", flush=True)

    @contextmanager
    def phase(self, name: str, items: int, detail: str = ""):
        """Time the block as phase `name` of `items` items (added to an earlier phase of the same name)."""
        self.say(f"{name}: {items} items{f' ({detail})' if detail else ''} …")
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 2)
        self.say(f"{name}: {items} items in {seconds:.1f} s ({items / max(seconds, 1e-9):.1f} items/s)")

    def batches(self, name: str):
        """A callback for batched work: (done, total) -> a progress line with rate and ETA."""
        start = time.perf_counter()

        def report(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            self.say(f"{name}: {done}/{total} items, {rate:.1f} items/s, ETA {(total - done) / rate:.0f} s")

        return report

    def take(self) -> dict[str, float]:
        """The seconds recorded since the last take, and a fresh start."""
        seconds, self.seconds = self.seconds, {}
        return seconds
