"""Micro-batching: requests that arrive together run as one model call, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Collects up to ``max_batch`` items, waiting at most ``max_wait_s`` after the first,
    then runs ``function(items)`` in a worker thread and hands each caller its result."""

    def __init__(self, function: Callable[[list[Any]], list[Any]], max_batch: int = 32,
                 max_wait_s: float = 0.005) -> None:
        self.function = function
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        # One model thread: torch already uses every core inside a call.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmfuse-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(pending) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, future) for item, future in pending if not future.done()]
            if live:
                await self._answer(live)

    async def _answer(self, live: list[tuple[Any, asyncio.Future]]) -> None:
        """One call for the batch; if it fails, one call per item, so that a bad item gets
        its own error and never its neighbours'."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor, self.function, [item for item, _ in live])
        except Exception as error:  # noqa: BLE001 - every waiting caller must hear of it
            if len(live) > 1:
                for one in live:
                    await self._answer([one])
            elif not live[0][1].done():
                live[0][1].set_exception(error)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
