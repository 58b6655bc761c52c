"""The predictor: a request alone is answered on the loop's thread; requests that arrive together are batched."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from covertype.schema import FEATURE_COLUMNS, Observation
from inference.model_holder import ModelHolder
from inference.predictor import INLINE_MAX_RECORDS, BatchingPredictor
from tests.inference.stores import ServingStore, record_of


@pytest.fixture(scope="module")
def holder(serving_store: ServingStore) -> ModelHolder:
    model_holder = ModelHolder(serving_store.store.tracking_uri, "covertype", "production", poll_interval_s=3600)
    assert model_holder.refresh().current is not None
    return model_holder


def observations(frame: pd.DataFrame, count: int, start: int = 0) -> list[Observation]:
    return [Observation(**record_of(frame, position)) for position in range(start, start + count)]


def run(predictor: BatchingPredictor, requests: list[list[Observation]]) -> list[np.ndarray]:
    """Start the predictor, send ``requests`` at the same moment, stop it; the probabilities of each."""

    async def scenario() -> list[np.ndarray]:
        await predictor.start()
        try:
            answers = await asyncio.gather(*(predictor.predict(records) for records in requests))
        finally:
            await predictor.stop()
        return [answer.probabilities for answer in answers]

    return asyncio.run(scenario())


def expected(serving_store: ServingStore, records: list[Observation]) -> np.ndarray:
    frame = pd.DataFrame([record.model_dump() for record in records], columns=list(FEATURE_COLUMNS))
    return serving_store.model.predict_proba(frame)


def test_a_request_alone_is_answered_inline(holder: ModelHolder, serving_store: ServingStore, shared_frame) -> None:
    predictor = BatchingPredictor(holder)
    records = observations(shared_frame, 3)
    (probabilities,) = run(predictor, [records])
    np.testing.assert_array_equal(probabilities, expected(serving_store, records))
    assert (predictor.inline_calls, predictor.batches, predictor.records) == (1, 1, 3)


def test_requests_arriving_together_are_batched_on_the_prediction_thread(
    holder: ModelHolder, serving_store: ServingStore, shared_frame
) -> None:
    predictor = BatchingPredictor(holder)
    requests = [observations(shared_frame, 1, start=position * 10) for position in range(8)]
    answers = run(predictor, requests)
    assert predictor.inline_calls == 0
    assert predictor.batches == 1  # all eight in one predict_proba call
    for records, probabilities in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(probabilities, expected(serving_store, records))


def test_a_large_request_alone_still_goes_to_the_prediction_thread(
    holder: ModelHolder, serving_store: ServingStore, shared_frame
) -> None:
    predictor = BatchingPredictor(holder)
    records = observations(shared_frame, INLINE_MAX_RECORDS + 1)
    (probabilities,) = run(predictor, [records])
    np.testing.assert_array_equal(probabilities, expected(serving_store, records))
    assert (predictor.inline_calls, predictor.batches) == (0, 1)
