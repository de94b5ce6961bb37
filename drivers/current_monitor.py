"""Pump current monitoring in domain words, and the async shell that keeps I2C off the event loop.

Blocking bus transfers run in ONE single-thread executor per I2C bus (``BusExecutors``): transfers on a
bus are serialised, and the loop never blocks on the wire (ARCHITECTURE habit 8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from drivers.ina209 import INA209Reading

T = TypeVar("T")


class BlockingCurrentMonitor(Protocol):
    """Something that measures a pump's current (blocking)."""

    def read(self) -> INA209Reading:
        """One reading; raises ``SensorUnavailableError`` instead of ever returning a made-up 0."""
        ...


class BusExecutors:
    """One single-thread executor per bus id, created on first use."""

    def __init__(self) -> None:
        self._executors: dict[int, ThreadPoolExecutor] = {}

    def get(self, bus_id: int) -> ThreadPoolExecutor:
        """The executor that owns bus ``bus_id``."""
        if bus_id not in self._executors:
            self._executors[bus_id] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"i2c-{bus_id}")
        return self._executors[bus_id]

    def shutdown(self) -> None:
        """Wait for queued transfers and stop every bus thread."""
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        self._executors.clear()


class AsyncCurrentMonitor:
    """Runs a ``BlockingCurrentMonitor`` on its bus's executor."""

    def __init__(self, monitor: BlockingCurrentMonitor, executor: ThreadPoolExecutor) -> None:
        self.monitor = monitor
        self._executor = executor

    async def read(self) -> INA209Reading:
        """Read on the bus thread; ``SensorUnavailableError`` propagates to the caller."""
        return await self.run(self.monitor.read)

    async def run(self, action: Callable[[], T]) -> T:
        """Run another blocking call for this device (``set_limits``, ``clear_peaks``…) on the bus thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, action)
