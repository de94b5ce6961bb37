"""Lets one waiter through per event-loop iteration, so a burst of work spreads over many iterations."""

from __future__ import annotations

import asyncio
from collections import deque


class Turnstile:
    """``await turnstile.wait()`` returns at most once per loop iteration, in arrival order.

    When fifty nodes reconnect at once, their CONNECTs complete in the same loop iteration; setting all
    their sessions up in that one iteration would hold every other task (the safety loop) for its whole
    duration. Behind a turnstile each iteration sets up one session and the rest of the loop runs between.
    """

    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._turning = False

    async def wait(self) -> None:
        """Return now if nobody passed in this iteration, else in a later iteration (FIFO)."""
        loop = asyncio.get_running_loop()
        if not self._turning:
            self._turning = True
            loop.call_soon(self._turn)
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _turn(self) -> None:
        # Runs in the iteration after the last pass: admit the next waiter, if any, and come back after it.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                asyncio.get_running_loop().call_soon(self._turn)
                return
        self._turning = False
