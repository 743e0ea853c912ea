"""The model worker: one thread runs every model call, grading requests in dynamic batches (as Triton does).

Handlers on the event loop put jobs on a bounded queue and await their answer; the worker thread takes
a job, gathers the grade jobs queued behind it and those that arrive within `window_s` (up to
`batch_routes` routes), grades them in one `predict_many` call and hands each request its own slice
back. The window is 0 by default: what queued while the last batch ran makes the next batch, so a
lone request waits for nothing, and under load batches form by themselves (measured in
docs/serving.md: a 1 ms window added 1.2 ms to a sequential client's p50 and no throughput). One thread, so no request
waits on a thread-pool token or a semaphore, and onnxruntime keeps one set of buffers. A full queue,
or a job still waiting at its deadline, is `Overloaded` (the API's 503): latency stays bounded under
any load instead of growing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..predictor import GradePredictor
from ..results import Prediction, RouteFailure

T = TypeVar("T")
# cg-serve's --max-queue and --timeout defaults: a few hundred queued requests are well under a second of
# model work, and a kiosk's tap that would wait longer than the timeout is better told to retry.
MAX_QUEUE = 256
TIMEOUT_S = 2.0
# Routes per onnxruntime run within a batch (predict_many sorts them by length first): with one
# intra-op thread, the shipped model (format 2, idle machine) costs 0.27 ms a route in runs of 16-64,
# 0.30 ms in runs of 8 and 0.33 ms at predict_many's default 256.
RUN_ROUTES = 16
STOP_S = 30  # at shutdown, how long the worker may take to answer what it holds
Result = Prediction | RouteFailure


class Overloaded(Exception):
    """The worker cannot answer in time: its queue is full, or the request's deadline passed in it."""

    retry_after_s = 1


@dataclass
class _Job:
    """One request's model work: `routes` to grade (batched with others), or any `call` on the predictor."""

    predictor: GradePredictor
    future: asyncio.Future[Any]
    deadline: float
    routes: list[Any] = field(default_factory=list)
    call: Callable[[GradePredictor], Any] | None = None


class ModelWorker:
    """Runs model calls in one thread, batching grade requests; start() and stop() bracket its life."""

    def __init__(
        self,
        *,
        max_queue: int = MAX_QUEUE,
        timeout_s: float = TIMEOUT_S,
        window_s: float = 0.0,
        batch_routes: int = 256,
    ) -> None:
        self.timeout_s = timeout_s
        self.window_s = window_s
        self.batch_routes = batch_routes
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._serve, name="climbgrade-model", daemon=True)
        self._held: _Job | None = None  # a job taken while gathering a batch it could not join: run next
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Answer the jobs queued, then end the thread (the app's shutdown); a stuck model is left behind."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=STOP_S)
        self._thread.join(timeout=STOP_S)

    async def grade(self, predictor: GradePredictor, routes: list[Any]) -> list[Result]:
        """`predictor.predict_many(routes)`, graded in a batch with other requests' routes; numbered from 0."""
        return await self._submit(predictor, routes=routes)

    async def call(self, predictor: GradePredictor, function: Callable[[GradePredictor], T]) -> T:
        """`function(predictor)` on the worker thread (an explain, a picture): model calls stay in one thread."""
        result: T = await self._submit(predictor, call=function)
        return result

    async def _submit(self, predictor: GradePredictor, **work: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        job = _Job(predictor, future, time.monotonic() + self.timeout_s, **work)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"the model's queue is full ({self._queue.maxsize} requests): try again shortly") from None
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
            raise Overloaded(f"no answer within {self.timeout_s:g} s: the model is busy, try again shortly") from None

    def _serve(self) -> None:
        while not self._stopping and (job := self._next()) is not None:
            if job.call is not None:
                self._run(job, job.call)
                continue
            self._run_batch(self._gather(job))

    def _next(self, timeout: float | None = None) -> _Job | None:
        """The next live job, None to stop; jobs past their deadline are dropped (their request had its 503)."""
        while True:
            job: _Job | None
            if self._held is not None:
                job, self._held = self._held, None
            else:
                job = self._queue.get(timeout=timeout)
            if job is None or time.monotonic() < job.deadline:
                return job

    def _gather(self, first: _Job) -> list[_Job]:
        """`first` and the grade jobs of the same predictor that arrive within the window, up to batch_routes."""
        batch, count = [first], len(first.routes)
        closes = time.monotonic() + self.window_s
        while count < self.batch_routes:
            try:
                job = self._next(timeout=max(0.0, closes - time.monotonic()))
            except queue.Empty:
                break
            if job is None:  # stop() was called: answer this batch, then end
                self._stopping = True
                break
            if job.call is not None or job.predictor is not first.predictor:
                self._held = job
                break
            batch.append(job)
            count += len(job.routes)
        return batch

    def _run_batch(self, batch: list[_Job]) -> None:
        """One predict_many over the batch's routes; each request gets its slice, numbered from 0."""
        try:
            routes = [route for job in batch for route in job.routes]
            results = batch[0].predictor.predict_many(routes, batch_size=RUN_ROUTES)
        except Exception as exc:  # a bug: every request of the batch gets it (the API's 500), the worker lives on
            for job in batch:
                _resolve(job, exc)
            return
        start = 0
        for job in batch:
            mine = results[start : start + len(job.routes)]
            _resolve(job, [dataclasses.replace(r, index=i) for i, r in enumerate(mine)])
            start += len(job.routes)

    def _run(self, job: _Job, function: Callable[[GradePredictor], Any]) -> None:
        try:
            result = function(job.predictor)
        except Exception as exc:  # a RouteError or a bug: raised in the request's handler
            result = exc
        _resolve(job, result)


def _resolve(job: _Job, result: Any) -> None:
    """Hand `result` (or an exception to raise) to the request's coroutine, on its event loop."""

    def settle() -> None:
        if job.future.done():  # its request already had its 503
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting any more
        job.future.get_loop().call_soon_threadsafe(settle)
