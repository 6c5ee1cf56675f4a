"""Linear probes on frozen features and their bootstrap intervals.

- Secondary structure: a per-residue multinomial logistic regression (scikit-learn, lbfgs) on
  standardized features; the figure is accuracy (Q3 / Q8) over all test residues, with a 95 %
  percentile bootstrap interval that resamples test *proteins* (residues of one protein are not
  independent).
- GB1: ridge regression on one vector per variant, the penalty chosen by efficient leave-one-out
  on the training set (`RidgeCV`); the figure is Spearman's rho on test, with a bootstrap interval
  over test variants.

Everything is deterministic for a seed: lbfgs and RidgeCV have no randomness, and the bootstrap
draws from `numpy.random.default_rng(seed)`.
"""
from typing import Sequence

import numpy as np
import scipy.sparse
import scipy.stats
from sklearn import linear_model
from sklearn import preprocessing

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95
LOGISTIC_C = 1.0
LOGISTIC_MAX_ITER = 300
RIDGE_ALPHAS = tuple(10.0 ** k for k in range(-3, 5))
ONE_HOT_ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
WINDOW = 7


def one_hot_window(sequence: str, window: int = WINDOW) -> scipy.sparse.csr_matrix:
    """[len(sequence), (2 * window + 1) * 21] sparse one-hot of each residue's neighbourhood:
    for each offset in [-window, window], 20 residue columns and one for "outside the chain"."""
    letters = len(ONE_HOT_ALPHABET) + 1
    index = {a: i for i, a in enumerate(ONE_HOT_ALPHABET)}
    codes = np.array([index.get(a, len(ONE_HOT_ALPHABET)) for a in sequence])
    length = len(sequence)
    rows, cols = [], []
    for slot, offset in enumerate(range(-window, window + 1)):
        positions = np.arange(length) + offset
        inside = (positions >= 0) & (positions < length)
        code = np.where(inside, codes[np.clip(positions, 0, length - 1)], len(ONE_HOT_ALPHABET))
        rows.append(np.arange(length))
        cols.append(slot * letters + code)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(length, (2 * window + 1) * letters))


def one_hot_positions(sequences: Sequence[str]) -> np.ndarray:
    """[n, length * 20] one-hot of aligned equal-length sequences (the GB1 one-hot baseline)."""
    index = {a: i for i, a in enumerate(ONE_HOT_ALPHABET)}
    length = len(sequences[0])
    features = np.zeros((len(sequences), length * len(ONE_HOT_ALPHABET)), np.float32)
    for row, sequence in enumerate(sequences):
        for position, residue in enumerate(sequence):
            features[row, position * len(ONE_HOT_ALPHABET) + index[residue]] = 1.0
    return features


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_accuracy(correct: Sequence[int], counts: Sequence[int], seed: int) -> dict:
    """Accuracy sum(correct) / sum(counts) and its bootstrap interval over proteins."""
    correct, counts = np.asarray(correct, np.int64), np.asarray(counts, np.int64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(BOOTSTRAP_SAMPLES, len(counts)))
    resampled = correct[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = _interval(resampled)
    return {"accuracy": float(correct.sum() / counts.sum()), "ci_low": low, "ci_high": high}


def per_residue_probe(train_features: Sequence, train_labels: Sequence[str],
                      test_features: Sequence, test_labels: Sequence[str], classes: str,
                      seed: int) -> dict:
    """Trains the logistic-regression probe on per-protein feature matrices (dense arrays or
    sparse matrices, one row per residue) and label strings; returns its test accuracy with the
    bootstrap interval, and the numbers of proteins and residues."""
    stack = scipy.sparse.vstack if scipy.sparse.issparse(train_features[0]) else np.concatenate
    x_train, x_test = stack(list(train_features)), stack(list(test_features))
    class_index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([class_index[c] for labels in train_labels for c in labels])
    y_test = np.array([class_index[c] for labels in test_labels for c in labels])
    if x_train.shape[0] != len(y_train) or x_test.shape[0] != len(y_test):
        raise ValueError("features have %d/%d rows but there are %d/%d labels" % (
            x_train.shape[0], x_test.shape[0], len(y_train), len(y_test)))
    # Sparse one-hot columns are already on one scale; dense embeddings are standardized.
    if not scipy.sparse.issparse(x_train):
        scaler = preprocessing.StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    model = linear_model.LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER)
    model.fit(x_train, y_train)
    hits = model.predict(x_test) == y_test
    lengths = [len(labels) for labels in test_labels]
    bounds = np.cumsum([0] + lengths)
    correct = [int(hits[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    result = bootstrap_accuracy(correct, lengths, seed)
    result.update(proteins=len(lengths), residues=int(bounds[-1]))
    return result


def regression_probe(x_train: np.ndarray, y_train: Sequence[float], x_test: np.ndarray,
                     y_test: Sequence[float], seed: int) -> dict:
    """Ridge on standardized features; Spearman's rho on test with a bootstrap interval."""
    scaler = preprocessing.StandardScaler().fit(x_train)
    model = linear_model.RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(x_train), y_train)
    predicted = model.predict(scaler.transform(x_test))
    y_test = np.asarray(y_test)
    rho = scipy.stats.spearmanr(predicted, y_test).statistic
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y_test), size=(BOOTSTRAP_SAMPLES, len(y_test)))
    # Spearman's rho is Pearson's r of ranks; rank each resample (ties: average ranks).
    pred_ranks = scipy.stats.rankdata(predicted[draws], axis=1)
    true_ranks = scipy.stats.rankdata(y_test[draws], axis=1)
    pred_ranks -= pred_ranks.mean(axis=1, keepdims=True)
    true_ranks -= true_ranks.mean(axis=1, keepdims=True)
    resampled = (pred_ranks * true_ranks).sum(axis=1) / np.sqrt(
        (pred_ranks ** 2).sum(axis=1) * (true_ranks ** 2).sum(axis=1))
    low, high = _interval(resampled)
    return {"spearman": float(rho), "ci_low": low, "ci_high": high, "alpha": float(model.alpha_),
            "variants": len(y_test)}
