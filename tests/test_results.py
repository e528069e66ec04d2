"""Metrics: bootstrap interval, confusion matrix, seed aggregation."""

import numpy as np

from bias.experiment.results import aggregate_seeds, bootstrap_ci, confusion_matrix, summarize


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.7
    big = rng.random(10000) < 0.7
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big)
    assert (bhi - blo) < (hi - lo) / 5
    # binomial standard error: the 95% interval of 10k samples at p=0.7 is about +-0.009
    assert abs((bhi - blo) / 2 - 1.96 * np.sqrt(0.7 * 0.3 / 10000)) < 0.002



def test_bootstrap_interval_by_scipy_equals_the_hand_written_percentile_interval():
    """scipy.stats.bootstrap (percentile) draws the same resamples from the same generator as the loop it
    replaced, so the published intervals do not move."""
    for n, seed in ((2, 0), (37, 1), (500, 2), (20_000, 3)):
        correct = (np.random.default_rng(n).random(n) < 0.7).astype(np.float64)
        rng = np.random.default_rng([seed, 95])
        chunk = max(1, min(1000, 2**24 // n))
        means = np.concatenate([correct[rng.integers(0, n, size=(min(chunk, 1000 - s), n))].mean(axis=1)
                                for s in range(0, 1000, chunk)])
        assert bootstrap_ci(correct, 1000, seed) == tuple(np.quantile(means, [0.025, 0.975]))
    assert bootstrap_ci(np.array([1.0])) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_confusion_and_summary_known_answer():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 1, 0, 1, 2, 2])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = summarize(labels, preds, ["a", "b", "c"], seed=0)
    assert s["accuracy"] == 4 / 6
    assert s["per_dataset"] == {"a": 2 / 3, "b": 0.5, "c": 1.0}
    assert s["chance"] == 0.5  # majority class share


def test_aggregate_mean_and_sample_std():
    runs = [{"accuracy": a, "seed": i, "chance": 0.5, "datasets": ["a", "b"], "per_dataset": {"a": a, "b": a}}
            for i, a in enumerate([0.6, 0.7, 0.8])]
    agg = aggregate_seeds(runs)
    assert np.isclose(agg["accuracy_mean"], 0.7) and np.isclose(agg["accuracy_std"], 0.1)
