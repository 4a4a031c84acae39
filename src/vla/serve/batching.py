"""Micro-batching: concurrent ``/act`` requests share one ``predict_batch`` call.

One worker task takes the first waiting request, then gathers more until ``max_batch_size`` or
``max_wait_ms`` is reached, groups them by ``unnorm_key`` and by the inputs they carry (camera views,
proprio or not: one model call takes one layout) and runs the model on a single background thread (so
the event loop keeps accepting requests and the model is never entered twice at once). Answers may be
actions [D] or chunks [K, D]; each request gets its own row.
``max_batch_size=1`` turns batching off: every request runs alone, without waiting. When a batched
call raises, its requests are rerun one at a time, so one bad request fails only itself.
:meth:`MicroBatcher.stats` also sums where requests wait: in the queue before their model call
(``queue_wait_s``, which includes the gathering window, ``gather_s``) and in model calls (``predict_s``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# (images, instructions, unnorm_key[, proprio=...]) -> [B, D] or [B, K, D]; an image is an array or a
# mapping view -> array. ``proprio`` is passed (by keyword) only when the batch's requests carry it.
PredictBatch = Callable[..., np.ndarray]
Images = np.ndarray | Mapping[str, np.ndarray]


@dataclass
class _Pending:
    image: Images
    instruction: str
    unnorm_key: str | None
    result: asyncio.Future
    proprio: np.ndarray | None = None
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def group(self) -> tuple:
        """Requests that may share a model call: same statistics, same views, proprio or not alike."""
        views = tuple(sorted(self.image)) if isinstance(self.image, Mapping) else None
        return self.unnorm_key, views, self.proprio is None


class MicroBatcher:
    """Queue requests and answer them from batched model calls; start/stop inside the event loop."""

    def __init__(self, predict_batch: PredictBatch, max_batch_size: int = 8, max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.requests_served = 0
        self.batches_run = 0
        self.largest_batch = 0
        self.queue_wait_s = 0.0  # over requests: submitted -> their model call starts
        self.gather_s = 0.0  # over batches: first request taken -> batch closed (the max_wait_ms window)
        self.predict_s = 0.0  # over model calls (preprocessing, model, un-normalization)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-predict")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = None

    async def submit(self, image: Images, instruction: str, unnorm_key: str | None,
                     proprio: np.ndarray | None = None) -> np.ndarray:
        """The unnormalized action [D] or chunk [K, D] for one request (waits for the batch it lands in)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(image, instruction, unnorm_key, future, proprio))
        return await future

    def stats(self) -> dict[str, int | float]:
        return {"requests_served": self.requests_served, "batches_run": self.batches_run,
                "largest_batch": self.largest_batch, "max_batch_size": self.max_batch_size,
                "queue_wait_s": self.queue_wait_s, "gather_s": self.gather_s, "predict_s": self.predict_s}

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            groups: dict[tuple, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.group, []).append(item)
            for items in groups.values():
                await self._predict(items)

    async def _gather(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        started = time.perf_counter()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self.gather_s += time.perf_counter() - started
        return batch

    async def _predict(self, items: list[_Pending]) -> None:
        """One model call for ``items`` (one group: same unnorm_key and inputs)."""
        live = [item for item in items if not item.result.done()]  # skip clients that went away
        if not live:
            return
        images = [item.image for item in live]
        instructions = [item.instruction for item in live]
        unnorm_key = live[0].unnorm_key
        call = functools.partial(self.predict_batch, images, instructions, unnorm_key)
        if live[0].proprio is not None:
            call = functools.partial(call, proprio=[item.proprio for item in live])
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.queue_wait_s += sum(started - item.submitted for item in live)
        try:
            actions = await loop.run_in_executor(self._executor, call)
        except Exception as err:  # the worker keeps serving whatever the model raises
            await self._fail(live, err)
            return
        self.predict_s += time.perf_counter() - started
        self.batches_run += 1
        self.requests_served += len(live)
        self.largest_batch = max(self.largest_batch, len(live))
        for item, action in zip(live, actions):
            if not item.result.done():
                item.result.set_result(action)

    async def _fail(self, items: list[_Pending], err: Exception) -> None:
        """A lone request gets the error; a failed batch is rerun one request at a time to find the culprit."""
        if len(items) == 1:
            if not items[0].result.done():
                items[0].result.set_exception(err)
            return
        log.warning("Batch of %d failed (%r); rerunning its requests one at a time", len(items), err)
        for item in items:
            await self._predict([item])
