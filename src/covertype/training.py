"""Training: the stable split, the candidate models, their search and their metrics.

No MLflow here (``covertype.tracking`` logs what this module computes), so
the same functions serve the DAG, the benchmark and the tests.

- **Split.** Whether an observation is in the evaluation set depends only on
  its row hash (``is_evaluation``), so as data grows the evaluation set
  gains rows and the champion and the challenger are always scored on the
  same rows. Rows whose features also came with another label stay in
  training (``label_conflicts``): a row can leave the evaluation set that
  way, never enter it after a model trained on it. A second, independent
  slice of the hash puts each training row in one of ``search_folds`` folds: the candidates are compared on out-of-fold
  predictions over the *whole* training part (a single held-out validation
  slice of ~250 rows ranked near-equal candidates mostly by noise).
- **Two fits of the chosen candidate.** The *hold-out model* is fitted on the
  training part only and scored on the evaluation set: that score is the
  run's ``macro_f1`` and what promotion compares. The *served model* is the
  same recipe fitted on every observation, evaluation rows included (15 %
  more rows: about one point of macro-F1 at one to four thousand rows). Its
  own score on the evaluation set would be inflated, so it is never used to
  decide anything; its hold-out twin vouches for it (docs/pipeline.md, "Two
  models per run").
- **Candidates.** Tree ensembles of scikit-learn behind the domain features
  (``covertype.features``): on 1-15 thousand rows of this dataset extremely
  randomised trees lead, random forests follow; gradient boosting was slower
  to train on two cores and no better at these sizes (docs/pipeline.md).
- **Size budget.** A fully grown extra-trees forest on the 15,120 shared rows takes
  ~0.8 MB per tree (``max_features`` 0.3) to ~1.1 MB (``sqrt``): a 300-tree forest
  would be 240-330 MB. The final
  forest grows only as many trees as fit ``max_model_mb`` (measured on a few
  probe trees), which also bounds single-row latency and training time.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn
import skops.io
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.pipeline import Pipeline

from covertype.estimators import AllCoverTypes
from covertype.features import DomainFeatures
from covertype.schema import COVER_TYPE_LABELS, COVER_TYPE_NAMES, FEATURE_COLUMNS, LABEL_COLUMN

log = logging.getLogger(__name__)

# Types in a saved model that skops does not trust by default; passed as
# ``skops_trusted_types`` at log time so that loading needs nothing more.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "covertype.features.DomainFeatures",
    "covertype.estimators.AllCoverTypes",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
)

_HASH_SLICE = 15  # hex digits per independent uniform draw taken from a row hash
_HASH_SCALE = float(16**_HASH_SLICE)


class NotEnoughData(ValueError):
    """Too few clean observations to train and evaluate a model."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a model family and its hyper-parameters."""

    name: str
    family: Literal["extra_trees", "random_forest"]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that controls a training run; ``fast()`` keeps tests quick on the same code path."""

    # 15 % of observations (by hash) are held out for evaluation and promotion.
    # Measured (5 samples of one portion per batch): 0.2 -> 0.15 adds ~0.6 point
    # of macro-F1 (6 % more training rows), while the paired champion/challenger
    # comparison still sees ~225 rows after 10 one-portion batches and ~2,270 at
    # all 15,120 rows (docs/pipeline.md, "Split").
    eval_fraction: float = 0.15
    # Folds of the search's cross-validation on the training part (fold by hash, so stable).
    search_folds: int = 3
    n_estimators: int = 200
    # Trees per candidate during the search: enough to rank them, cheaper than the final fit.
    search_n_estimators: int = 60
    # The search only ranks candidates: past this many training rows it runs on a hash-stable
    # sample of them, which bounds the step's time as data grows (with the full UCI data the tenth
    # run holds ~58,000 rows). The final fits always use every row.
    search_max_rows: int = 20_000
    candidates: tuple[Candidate, ...] = (
        Candidate("extra_trees_sqrt", "extra_trees", {"max_features": "sqrt"}),
        Candidate("extra_trees_0.3", "extra_trees", {"max_features": 0.3}),
        Candidate("random_forest_sqrt", "random_forest", {"max_features": "sqrt"}),
    )
    max_model_mb: float = 45.0
    min_rows: int = 20
    n_jobs: int = 2
    random_state: int = 0
    profile: str = "full"

    @classmethod
    def full(cls) -> TrainingConfig:
        """The configuration of the DAG and the benchmark."""
        return cls()

    @classmethod
    def fast(cls) -> TrainingConfig:
        """Small forests and two candidates: the test suite's configuration (same code path)."""
        return cls(
            n_estimators=12,
            search_n_estimators=8,
            candidates=(
                Candidate("extra_trees_sqrt", "extra_trees", {"max_features": "sqrt"}),
                Candidate("random_forest_sqrt", "random_forest", {"max_features": "sqrt"}),
            ),
            search_folds=2,
            max_model_mb=10.0,
            n_jobs=1,
            profile="fast",
        )

    @classmethod
    def named(cls, profile: str) -> TrainingConfig:
        """``full`` or ``fast`` (the ``TRAINING_PROFILE`` setting)."""
        factories: dict[str, Callable[[], TrainingConfig]] = {"full": cls.full, "fast": cls.fast}
        if profile not in factories:
            raise ValueError(f"unknown training profile {profile!r}; expected one of {sorted(factories)}")
        return factories[profile]()


# --------------------------------------------------------------------------- split


def _hash_fraction(row_hash: str, part: int) -> float:
    """A uniform number in [0, 1) read from the ``part``-th slice of a hex row hash."""
    start = part * _HASH_SLICE
    return int(row_hash[start : start + _HASH_SLICE], 16) / _HASH_SCALE


def is_evaluation(row_hash: str, eval_fraction: float) -> bool:
    """Whether an observation belongs to the evaluation set: a function of its hash alone."""
    return _hash_fraction(row_hash, 0) < eval_fraction


def search_fold(row_hash: str, n_folds: int) -> int:
    """The search fold (0..n_folds-1) of a training observation: an independent hash slice."""
    return min(int(_hash_fraction(row_hash, 1) * n_folds), n_folds - 1)


@dataclass(frozen=True)
class Split:
    """The observations divided by hash: ``train`` (with a search fold per row) and ``evaluation``."""

    train: pd.DataFrame
    folds: np.ndarray  # search fold of each row of ``train``, in order
    evaluation: pd.DataFrame
    label_conflicts: int = 0  # rows kept in ``train`` because their features also came with another label

    @property
    def all_rows(self) -> pd.DataFrame:
        """Both parts: what the served model is fitted on."""
        return pd.concat([self.train, self.evaluation])


def label_conflicts(frame: pd.DataFrame) -> np.ndarray:
    """Which rows share their 12 features with a row of another label (the source contradicted itself).

    The row hash covers the label, so such twins are distinct observations and
    their hashes could put one in each part of the split: the hold-out model
    would then have trained on exactly the features it is scored on.
    """
    if frame.empty:
        return np.zeros(0, dtype=bool)
    labels_per_features = frame.groupby(list(FEATURE_COLUMNS), sort=False)[LABEL_COLUMN].transform("nunique")
    return (labels_per_features > 1).to_numpy(dtype=bool)


def split_observations(frame: pd.DataFrame, config: TrainingConfig) -> Split:
    """Split the store's observations (a frame with a ``row_hash`` column) by hash.

    Rows whose features came with several labels are all kept in the training
    part. A row only ever leaves the evaluation set that way (rows are never
    deleted), so no hold-out model has trained on a row that is scored.
    """
    conflicts = label_conflicts(frame)
    by_hash = frame["row_hash"].map(lambda h: is_evaluation(h, config.eval_fraction)).to_numpy(dtype=bool)
    evaluation_mask = by_hash & ~conflicts
    train = frame[~evaluation_mask]
    folds = np.asarray([search_fold(h, config.search_folds) for h in train["row_hash"]], dtype=np.intp)
    return Split(train=train, folds=folds, evaluation=frame[evaluation_mask], label_conflicts=int(conflicts.sum()))


def observations_digest(row_hashes: Iterable[str]) -> str:
    """SHA-256 of a set of observations (their row hashes, in any order): what a training run was fitted on.

    Two runs with the same digest trained on the same rows; a retried
    training task uses it to recognise the run its earlier attempt finished.
    """
    return hashlib.sha256("\n".join(sorted(row_hashes)).encode()).hexdigest()


def recipe_digest(config: TrainingConfig) -> str:
    """SHA-256 of what decides the model besides its rows: this code, the features, the estimators, the
    schema, the configuration and scikit-learn's version.

    Fits are seeded (``random_state``), so the same rows and the same recipe give the same model: a retried
    training task with both unchanged may hand on the run it finished before, and one after an upgrade
    of any of them trains again.
    """
    # The schema too: the categories the one-hot columns and the classes come from.
    names = (__name__, DomainFeatures.__module__, AllCoverTypes.__module__, "covertype.schema")
    parts = [inspect.getsource(sys.modules[name]) for name in names] + [repr(config), sklearn.__version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def evaluation_rows(frame: pd.DataFrame, config: TrainingConfig) -> pd.DataFrame:
    """Only the evaluation set (what champion and challenger are scored on)."""
    return split_observations(frame, config).evaluation


# --------------------------------------------------------------------------- models


def build_model(candidate: Candidate, config: TrainingConfig, n_estimators: int | None = None) -> Pipeline:
    """The sklearn Pipeline of one candidate: raw-format frame -> domain features -> forest."""
    families: dict[str, type] = {"extra_trees": ExtraTreesClassifier, "random_forest": RandomForestClassifier}
    forest = families[candidate.family](
        n_estimators=n_estimators or config.n_estimators,
        n_jobs=config.n_jobs,
        random_state=config.random_state,
        **candidate.params,
    )
    return Pipeline([("features", DomainFeatures()), ("classifier", AllCoverTypes(forest))])


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input: the 12 raw-format columns in contract order."""
    return frame.loc[:, list(FEATURE_COLUMNS)]


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    return frame[LABEL_COLUMN].to_numpy(dtype=np.int64)


def serialized_mb(model: Any) -> float:
    """Size of the model as skops saves it (what the MLflow artifact holds), in MB."""
    return len(skops.io.dumps(model)) / 1e6


def _tree_bytes(estimator: Any) -> int:
    """Bytes of one fitted tree's arrays (nodes and class values): what dominates the saved size."""
    state = estimator.tree_.__getstate__()
    return int(state["nodes"].nbytes + state["values"].nbytes)


PROBE_TREES = 10


def fit_within_budget(model: Pipeline, frame: pd.DataFrame, config: TrainingConfig) -> tuple[Pipeline, float]:
    """Fit as many trees (up to ``n_estimators``) as fit ``max_model_mb``; returns (model, saved MB).

    A few probe trees give the size of one tree on this data; the forest is
    then grown (warm start) to the number that fits, so no time is spent on
    trees that would be thrown away. If the saved model still exceeds the
    budget, trailing trees are dropped (trees are independent).
    """
    probe = min(PROBE_TREES, config.n_estimators)
    classifier = model.named_steps["classifier"]
    classifier.set_params(estimator__n_estimators=probe)
    model.fit(features_of(frame), labels_of(frame))
    forest = classifier.estimator_
    per_tree = sum(_tree_bytes(tree) for tree in forest.estimators_) / len(forest.estimators_)
    affordable = int(config.max_model_mb * 1e6 * 0.95 / max(per_tree, 1.0))
    target = max(probe, min(config.n_estimators, affordable))
    if target > probe:
        forest.set_params(n_estimators=target, warm_start=True)
        forest.fit(model.named_steps["features"].transform(features_of(frame)), labels_of(frame))
        forest.set_params(warm_start=False)
    classifier.set_params(estimator__n_estimators=target)
    size_mb = serialized_mb(model)
    if size_mb > config.max_model_mb and len(forest.estimators_) > 1:
        kept = max(1, int(len(forest.estimators_) * config.max_model_mb / size_mb * 0.97))
        forest.estimators_ = forest.estimators_[:kept]
        forest.n_estimators = kept
        size_mb = serialized_mb(model)
    if target < config.n_estimators:
        log.info(
            "%.2f MB per tree on %s rows: %s of %s trees fit the %.0f MB budget",
            per_tree / 1e6,
            len(frame),
            len(forest.estimators_),
            config.n_estimators,
            config.max_model_mb,
        )
    return model, size_mb


def single_thread_for_serving(model: Pipeline) -> Pipeline:
    """Predict on one thread: for one row, joblib threads cost more than they save (and the service is threaded)."""
    forest = model.named_steps["classifier"].estimator_
    forest.n_jobs = 1
    return model


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Scores:
    """Metrics of one model on one labelled set."""

    macro_f1: float
    accuracy: float
    recall: dict[int, float]  # only the cover types present in the set: recall is undefined for the others
    confusion: np.ndarray
    rows: int

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat MLflow metrics: ``macro_f1``, ``accuracy``, ``recall_<k>`` for each cover type k in the set."""
        metrics = {f"{prefix}macro_f1": self.macro_f1, f"{prefix}accuracy": self.accuracy}
        metrics.update({f"{prefix}recall_{label}": value for label, value in self.recall.items()})
        return metrics


def score(model: Any, frame: pd.DataFrame) -> Scores:
    """Accuracy, macro-F1 over the 7 cover types, per-class recall and the confusion matrix."""
    if frame.empty:
        raise NotEnoughData("cannot score a model on an empty set")
    return score_predictions(labels_of(frame), np.asarray(model.predict(features_of(frame)), dtype=np.int64))


def score_predictions(truth: np.ndarray, predicted: np.ndarray) -> Scores:
    """``score`` on given predictions (the search's pooled out-of-fold predictions)."""
    labels = list(COVER_TYPE_LABELS)
    present = sorted(set(truth.tolist()))
    recalls = recall_score(truth, predicted, labels=present, average=None, zero_division=0)
    return Scores(
        # Macro-F1 and recall over the classes present in the set: a cover type that has not been
        # collected yet is not a zero (a logged recall of 0 would read as "never recognised").
        macro_f1=float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        accuracy=float(accuracy_score(truth, predicted)),
        recall=dict(zip(present, (float(r) for r in recalls), strict=True)),
        confusion=confusion_matrix(truth, predicted, labels=labels),
        rows=len(truth),
    )


def confusion_figure(scores: Scores, title: str) -> Any:
    """A matplotlib figure of the confusion matrix (rows: true cover type, columns: predicted)."""
    import matplotlib  # noqa: PLC0415 - plotting only when a run is logged

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 - after choosing the headless backend

    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(scores.confusion, cmap="Blues")
    names = [f"{k} {COVER_TYPE_NAMES[k]}" for k in COVER_TYPE_LABELS]
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title}\nmacro-F1 {scores.macro_f1:.3f}, accuracy {scores.accuracy:.3f}, {scores.rows} rows")
    threshold = scores.confusion.max() / 2 if scores.confusion.size else 0
    for (row, column), value in np.ndenumerate(scores.confusion):
        color = "white" if value > threshold else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- the search


@dataclass
class CandidateResult:
    """One candidate scored on its out-of-fold predictions over the training part."""

    candidate: Candidate
    scores: Scores
    fit_seconds: float  # all folds together


@dataclass
class TrainingOutcome:
    """The search's results and the chosen candidate's two fits (see the module docstring).

    ``model`` is the served model (every observation); ``holdout_model`` is the
    same recipe without the evaluation rows, and ``evaluation`` is its score on
    them.
    """

    config: TrainingConfig
    split: Split
    candidates: list[CandidateResult]
    best: Candidate
    model: Pipeline
    holdout_model: Pipeline
    evaluation: Scores
    model_mb: float
    holdout_model_mb: float
    train_seconds: float

    @property
    def n_trees(self) -> int:
        """Trees in the served model (the size budget decides how many)."""
        return n_trees_of(self.model)

    @property
    def holdout_n_trees(self) -> int:
        return n_trees_of(self.holdout_model)


def _check_enough(split: Split, config: TrainingConfig) -> None:
    total = len(split.train) + len(split.evaluation)
    if total < config.min_rows or split.train.empty or split.evaluation.empty:
        raise NotEnoughData(
            f"{total} clean observations ({len(split.train)} training, {len(split.evaluation)} evaluation): "
            f"need at least {config.min_rows} with both sets non-empty"
        )


def out_of_fold_predictions(candidate: Candidate, split: Split, config: TrainingConfig) -> np.ndarray:
    """Predictions for every training row by a model that did not see it (one fit per fold).

    With fewer than two non-empty folds (tiny data) the candidate is fitted and
    scored on the training part itself, which still ranks candidates and keeps
    the run going.
    """
    features, labels = features_of(split.train), labels_of(split.train)
    predicted = np.zeros(len(labels), dtype=np.int64)
    folds = np.unique(split.folds)
    if len(folds) < 2:
        model = build_model(candidate, config, config.search_n_estimators).fit(features, labels)
        return np.asarray(model.predict(features), dtype=np.int64)
    for fold in folds:
        held_out = split.folds == fold
        model = build_model(candidate, config, config.search_n_estimators)
        model.fit(features[~held_out], labels[~held_out])
        predicted[held_out] = model.predict(features[held_out])
    return predicted


def search_sample(split: Split, config: TrainingConfig) -> Split:
    """The training rows the search uses: all of them, or a hash-stable sample of ~``search_max_rows``."""
    if len(split.train) <= config.search_max_rows:
        return split
    keep_fraction = config.search_max_rows / len(split.train)
    keep = np.fromiter(
        (_hash_fraction(row_hash, 2) < keep_fraction for row_hash in split.train["row_hash"]),
        dtype=bool,
        count=len(split.train),
    )
    return replace(split, train=split.train[keep], folds=split.folds[keep])


def search_candidates(split: Split, config: TrainingConfig) -> list[CandidateResult]:
    """Score each candidate by ``search_folds``-fold cross-validation on the training part.

    Out-of-fold predictions cover every training row (up to ``search_max_rows``),
    so the ranking rests on all of them rather than on a small validation slice
    (at one portion per batch that slice held ~240 rows, and the candidates
    differ by less than its noise); the evaluation set stays untouched for the
    final score.
    """
    split = search_sample(split, config)
    truth = labels_of(split.train)
    results = []
    for candidate in config.candidates:
        started = time.perf_counter()
        predicted = out_of_fold_predictions(candidate, split, config)
        elapsed = time.perf_counter() - started
        scores = score_predictions(truth, predicted)
        log.info("candidate %s: out-of-fold macro-F1 %.4f on %s rows (%s folds, %.1f s)",
                 candidate.name, scores.macro_f1, scores.rows, config.search_folds, elapsed)  # fmt: skip
        results.append(CandidateResult(candidate, scores, elapsed))
    return results


def _fit_final(candidate: Candidate, frame: pd.DataFrame, config: TrainingConfig) -> tuple[Pipeline, float]:
    model, size_mb = fit_within_budget(build_model(candidate, config), frame, config)
    return single_thread_for_serving(model), size_mb


def n_trees_of(model: Pipeline) -> int:
    return len(model.named_steps["classifier"].estimator_.estimators_)


def train(frame: pd.DataFrame, config: TrainingConfig) -> TrainingOutcome:
    """The whole training step: split, search, then the best candidate's hold-out fit and served fit.

    The hold-out fit (training part only) is scored on the evaluation set; the
    served fit uses every observation. Both follow the same size budget.
    """
    started = time.perf_counter()
    split = split_observations(frame, config)
    _check_enough(split, config)
    results = search_candidates(split, config)
    best = max(results, key=lambda result: result.scores.macro_f1).candidate
    holdout_model, holdout_mb = _fit_final(best, split.train, config)
    evaluation = score(holdout_model, split.evaluation)
    model, size_mb = _fit_final(best, split.all_rows, config)
    elapsed = time.perf_counter() - started
    log.info("best candidate %s: hold-out fit on %s rows scores macro-F1 %.4f on %s evaluation rows; "
             "served fit on all %s rows: %.1f MB, %s trees; %.1f s in all",
             best.name, len(split.train), evaluation.macro_f1, evaluation.rows,
             len(split.train) + len(split.evaluation), size_mb, n_trees_of(model), elapsed)  # fmt: skip
    return TrainingOutcome(
        config=config,
        split=split,
        candidates=results,
        best=best,
        model=model,
        holdout_model=holdout_model,
        evaluation=evaluation,
        model_mb=size_mb,
        holdout_model_mb=holdout_mb,
        train_seconds=elapsed,
    )
