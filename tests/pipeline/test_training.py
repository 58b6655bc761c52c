"""Training: the hash split is stable as data grows, the metrics are right, the model keeps its contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.exceptions import NotFittedError

from covertype import store, training
from covertype.estimators import AllCoverTypes, forest_proba
from covertype.parsing import parse_payload_rows
from covertype.schema import COVER_TYPE_LABELS, FEATURE_COLUMNS, LABEL_COLUMN

FAST = training.TrainingConfig.fast()


def test_evaluation_membership_depends_only_on_the_hash(shared_observations: pd.DataFrame) -> None:
    small = shared_observations.head(3000)
    grown = shared_observations.sample(frac=1.0, random_state=3)  # all rows, another order
    small_eval = set(training.evaluation_rows(small, FAST)["row_hash"])
    grown_eval = set(training.evaluation_rows(grown, FAST)["row_hash"])
    # Rows already there keep their side; the evaluation set only gains rows as data grows.
    assert small_eval == grown_eval & set(small["row_hash"])
    assert len(grown_eval) / len(grown) == pytest.approx(FAST.eval_fraction, abs=0.015)


@pytest.mark.parametrize(
    ("raw_row", "expected_hash", "in_evaluation", "fold"),
    [
        (
            ["2596", "51", "3", "258", "0", "510", "221", "232", "148", "6279", "Rawah", "C7745", "5"],
            "9a874a7a8aa78df47a79b6d92d77270672c1770a68f0de8bfb6954f7d25de173",
            False,
            0,
        ),
        (
            ["2590", "56", "2", "212", "-6", "390", "220", "235", "151", "6225", "Rawah", "C7745", "5"],
            "0a3aa83520915018dc9b44dc64b8e88b7ca6a38296337a7b9115fca075557a72",
            True,
            1,
        ),
    ],
)
def test_the_row_hash_and_the_split_it_decides_are_pinned(
    raw_row: list[str], expected_hash: str, in_evaluation: bool, fold: int
) -> None:
    """A changed hash would move every row to another side of the split: champion and challenger would then
    be compared on rows the older models were trained on. Changing it must be a visible decision."""
    [record] = parse_payload_rows([raw_row]).rows
    row_hash = store.row_hash(record)
    assert row_hash == expected_hash
    assert training.is_evaluation(row_hash, 0.15) is in_evaluation
    assert training.search_fold(row_hash, 3) == fold


def test_split_parts_are_disjoint_and_cover_everything(shared_observations: pd.DataFrame) -> None:
    split = training.split_observations(shared_observations, FAST)
    train, evaluation = set(split.train["row_hash"]), set(split.evaluation["row_hash"])
    assert not train & evaluation
    assert train | evaluation == set(shared_observations["row_hash"])
    assert len(split.folds) == len(split.train)
    counts = np.bincount(split.folds, minlength=FAST.search_folds)
    assert len(counts) == FAST.search_folds
    assert counts / len(split.train) == pytest.approx(np.full(FAST.search_folds, 1 / FAST.search_folds), abs=0.02)


def _relabelled_twins(frame: pd.DataFrame) -> pd.DataFrame:
    """The same measurements sent again with another cover type (a source that contradicts itself)."""
    twins = frame.drop(columns="row_hash").copy()
    twins[LABEL_COLUMN] = twins[LABEL_COLUMN] % 7 + 1
    twins["row_hash"] = [store.row_hash(record) for record in twins.to_dict("records")]
    return twins


def test_rows_whose_features_came_with_another_label_all_stay_in_training(
    shared_observations: pd.DataFrame,
) -> None:
    """Else one twin could be scored and the other trained on: the hold-out model would know the answer."""
    before = training.split_observations(shared_observations, FAST)
    twins = _relabelled_twins(shared_observations.sample(400, random_state=5))
    assert {True, False} == {training.is_evaluation(h, FAST.eval_fraction) for h in twins["row_hash"]}

    after = training.split_observations(pd.concat([shared_observations, twins], ignore_index=True), FAST)

    assert after.label_conflicts == 2 * len(twins)
    twin_features = set(twins[list(FEATURE_COLUMNS)].itertuples(index=False))
    assert not twin_features & set(after.evaluation[list(FEATURE_COLUMNS)].itertuples(index=False))
    # Rows only leave the evaluation set: what an earlier hold-out model was scored on and never trained on.
    assert set(after.evaluation["row_hash"]) <= set(before.evaluation["row_hash"])
    assert before.label_conflicts == 0
    assert len(after.train) + len(after.evaluation) == len(shared_observations) + len(twins)


def test_search_fold_depends_only_on_the_hash(shared_observations: pd.DataFrame) -> None:
    small = training.split_observations(shared_observations.head(3000), FAST)
    grown = training.split_observations(shared_observations.sample(frac=1.0, random_state=3), FAST)
    grown_folds = dict(zip(grown.train["row_hash"], grown.folds, strict=True))
    assert all(grown_folds[h] == fold for h, fold in zip(small.train["row_hash"], small.folds, strict=True))
    assert training.search_fold("0" * 15 + "0" * 49, 3) == 0
    assert training.search_fold("0" * 15 + "f" * 49, 3) == 2


def test_is_evaluation_reads_the_hash_prefix() -> None:
    assert training.is_evaluation("0" * 64, 0.2) is True
    assert training.is_evaluation("f" * 64, 0.2) is False
    assert training.is_evaluation("3" + "0" * 63, 0.2) is True  # 0x3/0x10 = 0.1875
    assert training.is_evaluation("4" + "0" * 63, 0.2) is False  # 0.25


def test_score_computes_macro_f1_recall_and_confusion() -> None:
    class Fixed:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return frame["Elevation"].to_numpy()  # the "prediction" is smuggled in the Elevation column

    truth = [1, 1, 2, 2, 3, 3]
    predicted = [1, 2, 2, 2, 3, 1]
    frame = pd.DataFrame(dict.fromkeys(FEATURE_COLUMNS, 0), index=range(6))
    frame["Elevation"] = predicted
    frame[LABEL_COLUMN] = truth
    scores = training.score(Fixed(), frame)
    assert scores.accuracy == pytest.approx(4 / 6)
    assert scores.recall[1] == pytest.approx(0.5)
    assert scores.recall[2] == 1.0
    assert scores.recall[3] == 0.5
    assert 7 not in scores.recall  # no cover type 7 in the set: undefined, not 0
    # F1 per present class: 1 -> 0.5, 2 -> 0.8, 3 -> 2/3; macro over the classes present in the set.
    assert scores.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert scores.confusion.shape == (7, 7)
    assert scores.confusion[0, 1] == 1
    assert scores.confusion.sum() == 6
    metrics = scores.as_metrics()
    assert set(metrics) == {"macro_f1", "accuracy", "recall_1", "recall_2", "recall_3"}


def test_training_picks_a_candidate_and_beats_chance(shared_observations: pd.DataFrame) -> None:
    frame = shared_observations.sample(3000, random_state=0)
    # The weaker candidate on this sample (the random forest) first: taking the first would not pass for the best.
    config = replace(FAST, candidates=tuple(reversed(FAST.candidates)))
    outcome = training.train(frame, config)
    assert [result.candidate for result in outcome.candidates] == list(config.candidates)
    best = max(outcome.candidates, key=lambda result: result.scores.macro_f1)
    assert best is not outcome.candidates[0], "the sample must make the first candidate the weaker one"
    assert outcome.best == best.candidate
    # The search scores out-of-fold predictions of every training row, never the evaluation rows.
    assert all(result.scores.rows == len(outcome.split.train) for result in outcome.candidates)
    assert outcome.evaluation.rows == len(outcome.split.evaluation) > 0
    assert outcome.evaluation.macro_f1 > 0.6  # chance is ~0.14 on seven balanced classes
    assert 0 < outcome.model_mb <= config.max_model_mb
    proba = outcome.model.predict_proba(training.features_of(frame.head(3)))
    assert proba.shape == (3, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert outcome.model.classes_.tolist() == list(COVER_TYPE_LABELS)


def test_the_search_scores_each_row_by_a_model_that_did_not_train_on_it(shared_observations: pd.DataFrame) -> None:
    """Fully grown trees recall every row they trained on: in-sample predictions would score 1.0."""
    config = _one_small_candidate()
    split = training.split_observations(shared_observations.sample(1500, random_state=1), config)
    [candidate] = config.candidates
    truth = training.labels_of(split.train)
    in_sample = training.build_model(candidate, config).fit(training.features_of(split.train), truth)
    assert (in_sample.predict(training.features_of(split.train)) == truth).mean() == 1.0

    out_of_fold = training.out_of_fold_predictions(candidate, split, config)
    assert len(out_of_fold) == len(truth)
    assert 0.5 < (out_of_fold == truth).mean() < 0.95


def _one_small_candidate(**overrides: int) -> training.TrainingConfig:
    """A quick configuration: one extra-trees candidate, two search folds, one thread."""
    return training.TrainingConfig(
        candidates=(training.Candidate("extra_trees_sqrt", "extra_trees", {"max_features": "sqrt"}),),
        search_folds=2,
        n_jobs=1,
        profile="test",
        **overrides,
    )


def _rows_fitted_on(model: object) -> set[int]:
    """Training-set sizes seen by a forest's trees (the root's sample count; extra-trees do not bootstrap)."""
    forest = model.named_steps["classifier"].estimator_  # type: ignore[attr-defined]
    return {int(tree.tree_.n_node_samples[0]) for tree in forest.estimators_}


def test_served_model_uses_every_row_and_the_holdout_model_skips_the_evaluation_set(
    shared_observations: pd.DataFrame,
) -> None:
    frame = shared_observations.sample(2500, random_state=1)
    config = _one_small_candidate(n_estimators=10, search_n_estimators=5)
    outcome = training.train(frame, config)
    assert _rows_fitted_on(outcome.holdout_model) == {len(outcome.split.train)}
    assert _rows_fitted_on(outcome.model) == {len(frame)} == {len(outcome.split.all_rows)}
    # The reported evaluation score is the hold-out model's, recomputed here from scratch.
    rescored = training.score(outcome.holdout_model, outcome.split.evaluation)
    assert (outcome.evaluation.macro_f1, outcome.evaluation.rows) == (rescored.macro_f1, rescored.rows)
    np.testing.assert_array_equal(outcome.evaluation.confusion, rescored.confusion)
    # The served model has seen the evaluation rows: its own score there would be inflated.
    assert training.score(outcome.model, outcome.split.evaluation).macro_f1 > outcome.evaluation.macro_f1


def test_search_runs_on_a_stable_sample_past_its_row_cap(shared_observations: pd.DataFrame) -> None:
    config = _one_small_candidate(n_estimators=6, search_n_estimators=4, search_max_rows=600)
    frame = shared_observations.sample(3000, random_state=2)
    split = training.split_observations(frame, config)
    sample = training.search_sample(split, config)
    assert 450 < len(sample.train) < 750 < len(split.train)
    assert set(sample.train["row_hash"]) <= set(split.train["row_hash"])
    # The same rows whatever the order the store returns them in.
    shuffled_split = training.split_observations(frame.sample(frac=1.0, random_state=9), config)
    shuffled = training.search_sample(shuffled_split, config)
    assert set(shuffled.train["row_hash"]) == set(sample.train["row_hash"])

    outcome = training.train(frame, config)
    assert outcome.candidates[0].scores.rows == len(sample.train)
    assert _rows_fitted_on(outcome.model) == {len(frame)}  # the final fits still use every row


def test_model_answers_all_seven_classes_even_when_trained_on_three(shared_observations: pd.DataFrame) -> None:
    subset = shared_observations[shared_observations[LABEL_COLUMN].isin([1, 2, 5])].head(400)
    outcome = training.train(subset, FAST)
    proba = outcome.model.predict_proba(training.features_of(shared_observations.head(5)))
    assert proba.shape == (5, 7)
    assert (proba[:, [2, 3, 5, 6]] == 0).all()
    assert set(outcome.model.predict(training.features_of(shared_observations.head(50)))) <= {1, 2, 5}


def test_size_budget_trims_trees(shared_observations: pd.DataFrame) -> None:
    config = training.TrainingConfig(n_estimators=30, max_model_mb=0.5, n_jobs=1, profile="test")
    model = training.build_model(config.candidates[0], config)
    model, size_mb = training.fit_within_budget(model, shared_observations.head(4000), config)
    assert size_mb <= 0.5
    assert 1 <= len(model.named_steps["classifier"].estimator_.estimators_) < 30


def test_too_little_data_is_a_clear_error(shared_observations: pd.DataFrame) -> None:
    with pytest.raises(training.NotEnoughData, match="need at least"):
        training.train(shared_observations.head(5), FAST)


def test_unknown_label_is_refused() -> None:
    with pytest.raises(ValueError, match="not cover types"):
        AllCoverTypes(estimator=None).fit(np.zeros((2, 1)), np.array([0, 8]))


def test_profiles_by_name() -> None:
    assert training.TrainingConfig.named("fast") == FAST
    assert training.TrainingConfig.named("full").profile == "full"
    with pytest.raises(ValueError, match="unknown training profile"):
        training.TrainingConfig.named("huge")


def test_fast_forest_proba_equals_sklearn_and_checks_its_input(shared_observations: pd.DataFrame) -> None:
    frame = shared_observations.sample(1500, random_state=1)
    model = training.build_model(FAST.candidates[0], FAST).fit(training.features_of(frame), training.labels_of(frame))
    features = model.named_steps["features"].transform(training.features_of(shared_observations.head(40)))
    forest = model.named_steps["classifier"].estimator_
    np.testing.assert_array_equal(forest_proba(forest, features), forest.predict_proba(features))
    np.testing.assert_array_equal(model.predict_proba(training.features_of(shared_observations.head(40))),
                                  forest.predict_proba(features))  # fmt: skip
    with pytest.raises(ValueError, match="features"):
        forest_proba(forest, features[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        forest_proba(forest, np.full_like(features, np.nan))
    with pytest.raises(NotFittedError):
        forest_proba(ExtraTreesClassifier(n_estimators=2), features)


def test_fast_forest_proba_takes_sparse_input_too(shared_observations: pd.DataFrame) -> None:
    # A wrapped forest behind a sparse encoder (not our pipeline's, but a valid use of the wrapper).
    frame = shared_observations.sample(800, random_state=2)
    dense = frame[["Elevation", "Slope", "Aspect"]].to_numpy(dtype=np.float64)
    wrapped = AllCoverTypes(ExtraTreesClassifier(n_estimators=5, random_state=2)).fit(
        sparse.csr_matrix(dense), frame[LABEL_COLUMN]
    )
    from_sparse = wrapped.predict_proba(sparse.csr_matrix(dense))
    np.testing.assert_array_equal(from_sparse, wrapped.predict_proba(dense))
    assert from_sparse.shape == (800, 7)
    forest = wrapped.estimator_
    np.testing.assert_array_equal(forest_proba(forest, sparse.csc_matrix(dense)), forest.predict_proba(dense))
    with pytest.raises(ValueError, match="features"):
        forest_proba(forest, sparse.csr_matrix(dense[:, :2]))
