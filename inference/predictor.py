"""Micro-batching of prediction requests: one ``predict_proba`` call for all records waiting.

Most of the cost of a one-row prediction is fixed per call (the feature
step, pandas, the forest's set-up), not per row. So requests are
queued, and a single worker takes *everything* that queued while the previous
call ran and predicts it in one call. At concurrency 1 nothing waits (the
queue holds one request, which goes straight through); under load, batches
grow by themselves. No timer, so no latency is added to wait for company.

The call runs in one dedicated thread: on two cores, one thread predicting
while the event loop parses and answers requests uses both cores without
oversubscribing them (thread pools of the model are limited to one thread).
Except for a small request that is alone in the service: it is predicted on
the event loop's own thread, because the hop to the prediction thread and back
costs about half as much as a one-row prediction, and with no other request in
flight there is nothing for the loop to do meanwhile. A request that arrives
during that call waits for it (under a millisecond for a few rows) and then
takes the threaded, batched path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd

from covertype.schema import Observation
from inference.model_call import predict_validated, records_frame
from inference.model_holder import LoadedModel, ModelHolder

logger = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """No model is loaded; the message says what is missing in the registry."""


class PredictionError(RuntimeError):
    """The model failed on validated records; the message names the version, so a 500 says which model broke."""

    def __init__(self, version: str, error: BaseException) -> None:
        super().__init__(f"prediction failed with model version {version}: {type(error).__name__}: {error}")
        self.version = version
        self.__cause__ = error


@dataclass(frozen=True)
class Prediction:
    """The probabilities of a request's records, with the model version that computed them."""

    model: LoadedModel
    probabilities: np.ndarray  # shape (records, classes), columns in model.class_labels order


@dataclass
class _Job:
    records: Sequence[Observation]
    future: asyncio.Future[Prediction]


def predict_frame(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """The probabilities of ``frame`` by ``model``, called as the load check called it (``predict_validated``)."""
    return predict_validated(model.model, frame)


# Largest request predicted on the event loop's thread when it is alone (~1 ms of model time).
INLINE_MAX_RECORDS = 16


class BatchingPredictor:
    """Queues prediction jobs and answers them in as few ``predict_proba`` calls as possible."""

    def __init__(
        self,
        holder: ModelHolder,
        max_batch_records: int = 4096,
        on_batch: Callable[[int], None] | None = None,
        inline_max_records: int = INLINE_MAX_RECORDS,
    ) -> None:
        self._holder = holder
        self._max_batch_records = max_batch_records
        self._on_batch = on_batch
        self._inline_max_records = inline_max_records
        self._in_flight = 0
        self.inline_calls = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0
        self.records = 0

    async def start(self) -> None:
        """Start the worker; call from the running event loop (the app's lifespan)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._worker = asyncio.create_task(self._run(), name="predict-batcher")

    async def stop(self) -> None:
        """Stop the worker; queued jobs are failed rather than left hanging."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(ModelUnavailableError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def predict(self, records: Sequence[Observation]) -> Prediction:
        """Probabilities for ``records``, computed together with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("BatchingPredictor.start() was not called")
        if self._holder.current is None:
            raise ModelUnavailableError(self._holder.unavailable_reason())
        self._in_flight += 1
        try:
            # One turn of the loop first, so that requests which arrived together all get here
            # before any is answered alone: then they are batched on the prediction thread.
            await asyncio.sleep(0)
            model = self._holder.current
            alone = self._in_flight == 1 and self._queue.empty()
            if alone and model is not None and len(records) <= self._inline_max_records:
                return self._predict_inline(model, records)
            future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Job(records, future))
            return await future
        finally:
            self._in_flight -= 1

    def _predict_inline(self, model: LoadedModel, records: Sequence[Observation]) -> Prediction:
        """A request alone in the service, on the loop's thread (see the module docstring)."""
        try:
            probabilities = predict_frame(model, records_frame(records))
        except Exception as error:
            logger.exception("prediction of %d records with model version %s failed", len(records), model.version)
            raise PredictionError(model.version, error) from error
        self.inline_calls += 1
        self._count_batch(len(records))
        return Prediction(model, probabilities)

    def _count_batch(self, count: int) -> None:
        self.batches += 1
        self.records += count
        if self._on_batch is not None:
            self._on_batch(count)

    async def _run(self) -> None:
        while True:
            jobs = await self._take_batch()
            if jobs:
                await self._answer(jobs)

    async def _take_batch(self) -> list[_Job]:
        """The next job and every job queued behind it, up to ``max_batch_records`` (at least one job)."""
        assert self._queue is not None
        jobs = [await self._queue.get()]
        count = len(jobs[0].records)
        while count < self._max_batch_records and not self._queue.empty():
            job = self._queue.get_nowait()
            jobs.append(job)
            count += len(job.records)
        return [job for job in jobs if not job.future.done()]  # not the clients that went away

    async def _answer(self, jobs: list[_Job]) -> None:
        # One snapshot for the whole batch: a swap during the call changes nothing for it.
        model = self._holder.current
        if model is None:
            _fail(jobs, ModelUnavailableError(self._holder.unavailable_reason()))
            return
        await self._answer_with(model, jobs)

    async def _answer_with(self, model: LoadedModel, jobs: list[_Job]) -> None:
        count = sum(len(job.records) for job in jobs)
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, model, jobs)
        except asyncio.CancelledError:
            _fail(jobs, ModelUnavailableError("the service is shutting down"))
            raise
        except Exception as error:
            if len(jobs) > 1:
                # The records of one request can break a model that the others do not: answer each
                # request of the batch alone, so only the requests that fail get the 500.
                logger.warning(
                    "a batch of %d requests failed with model version %s (%s: %s): answering each alone",
                    len(jobs),
                    model.version,
                    type(error).__name__,
                    error,
                )
                for index, job in enumerate(jobs):
                    try:
                        await self._answer_with(model, [job])
                    except asyncio.CancelledError:
                        _fail(jobs[index + 1 :], ModelUnavailableError("the service is shutting down"))
                        raise
                return
            logger.exception("prediction of a batch of %d records with model version %s failed", count, model.version)
            _fail(jobs, PredictionError(model.version, error))
            return
        self._count_batch(count)
        start = 0
        for job in jobs:
            end = start + len(job.records)
            if not job.future.done():
                job.future.set_result(Prediction(model, probabilities[start:end]))
            start = end

    @staticmethod
    def _predict(model: LoadedModel, jobs: list[_Job]) -> np.ndarray:
        records = jobs[0].records if len(jobs) == 1 else list(chain.from_iterable(job.records for job in jobs))
        return predict_frame(model, records_frame(records))


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
