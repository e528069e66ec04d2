"""Object statistics per dataset: which classes each image contains, from four sources, and how datasets differ.

Class presence (`Presence`: an n_images x n_classes boolean matrix, the class names, the source) comes from

* ``planted_scene``: the planted generator's own record of each image (`bias.data.planted.render_scene`). Its
  classes are the shape vocabulary (`bias.data.planted.SHAPES`: circle, square, star, ...), counted per
  object, then the overlays: the graphic kinds (banner, bar, logo, frame; one each) and ``text`` (one per
  written word, the banner's word not included: it is part of the banner);
* ``imagenet``: the side output ``classes`` of `imagenet_cls` (per image its top-k ImageNet-1k classes and their
  softmax probabilities). Rule: the top-1 class is always present, and every other stored class whose
  probability is at least `threshold` (default 0.2, ours: a second class that a softmax gives a fifth of its
  mass is a second object or an ambiguous one; at >= 0.5 no second class could ever qualify);
* ``lvis``: the side output ``boxes`` of `object_det` (one row per kept detection, LVIS ids 1..1203). Rule: a
  class is present when at least one of its detections scores >= `score_threshold` (default 0.5, the
  published detection threshold); `counts` holds the number of such detections;
* ``ade20k``: the side output ``classes`` of `seg` (per image the classes painted and their pixel share). Rule:
  a class is present when it covers at least `min_share` of the image (default 0.01: one pixel in a hundred;
  single stray pixels of a segmenter are not objects).

Each reader takes what the source is stored in (scene records, or a transform's `OutputStore`) and the images'
SHA-1s, in the order of the analysis. An image without an output (no record, never computed, or failed) is not
dropped: its row stays all False, `has_output` is False, and `missing` lists it with the reason; the statistics
use only images with an output and report how many were missing per dataset.

Statistics on a presence matrix and the dataset label of each image (index into `datasets`):

* `class_shares`: per dataset, the share of its images that contain each class (a pyarrow table);
* `unique_per_image`: per dataset, the number of distinct classes in each image (box-plot data and a summary),
  drawn by `box_plot_png`;
* `ovr_ranking`: for each dataset, an L2-penalised logistic regression of "is this image from the dataset"
  on the binary presence of the most common classes (one vs rest), classes ranked by their coefficient, with
  percentile bootstrap confidence intervals (images resampled with replacement, `n_boot` times, seeded). All
  replicates are fitted at once by a vectorised Newton's method (bootstrap resampling = integer weights on the
  images; images with the same presence and label pooled into one weighted row; every replicate started from
  the full-data fit), which minimises the same objective as scikit-learn's ``LogisticRegression(C=C)``.

Everything returns plain dicts and pyarrow tables (`table_records` turns a table into JSON-ready rows), so it
goes to JSON or parquet as it is.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bias.core.errors import ConfigError
from bias.core.strings import sha1_array
from bias.inference.store import OutputStore

SOURCES = ("planted_scene", "imagenet", "lvis", "ade20k")
#: the overlay classes of planted images, after the shapes
OVERLAY_CLASSES = ("banner", "bar", "logo", "frame", "text")
IMAGENET_THRESHOLD = 0.2
LVIS_SCORE_THRESHOLD = 0.5
ADE20K_MIN_SHARE = 0.01


@dataclass
class Presence:
    """Which classes each image contains, according to one source.

    `present[i, c]`: image i contains class c; `has_output[i]`: the source says anything about image i (rows
    of images without output are all False and are left out of every statistic); `missing`: one
    ``{"index", "sha1", "reason"}`` per image without output; `counts[i, c]`: instances of class c in image i
    where the source counts them (planted objects, detections), else None; `rule`: the presence rule, in words.
    """

    source: str
    classes: list[str]
    present: np.ndarray
    has_output: np.ndarray
    missing: list[dict[str, Any]] = field(default_factory=list)
    counts: np.ndarray | None = None
    rule: str = ""

    def __post_init__(self) -> None:
        self.present = np.asarray(self.present, dtype=bool)
        self.has_output = np.asarray(self.has_output, dtype=bool)
        if self.present.ndim != 2 or self.present.shape != (len(self.has_output), len(self.classes)):
            raise ValueError(f"presence ({self.source}): matrix {self.present.shape} does not match "
                             f"{len(self.has_output)} images x {len(self.classes)} classes")
        if self.counts is not None and np.shape(self.counts) != self.present.shape:
            raise ValueError(f"presence ({self.source}): counts {np.shape(self.counts)} do not match the matrix")

    @property
    def n_images(self) -> int:
        return len(self.has_output)

    def observed(self) -> Presence:
        """The same images, only the classes present in at least one of them."""
        keep = self.present.any(axis=0)
        return Presence(self.source, [c for c, k in zip(self.classes, keep) if k], self.present[:, keep],
                        self.has_output, list(self.missing), None if self.counts is None else self.counts[:, keep],
                        self.rule)

    def summary(self) -> dict[str, Any]:
        """The source, its rule and how many images had output, were missing (with the list) and classes seen."""
        return {"source": self.source, "rule": self.rule, "n_images": self.n_images,
                "n_with_output": int(self.has_output.sum()), "n_missing": len(self.missing),
                "n_classes": len(self.classes), "n_classes_observed": int(self.present.any(axis=0).sum()),
                "missing": list(self.missing)}


# --- readers ----------------------------------------------------------------------------------------------

def planted_classes() -> list[str]:
    """The classes of planted images: the shape vocabulary, then the overlay classes."""
    from bias.data.planted import SHAPES

    return [*SHAPES, *OVERLAY_CLASSES]


def planted_presence(records: Sequence[Mapping[str, Any] | None], sha1s: Sequence[str] | None = None) -> Presence:
    """Presence and counts from planted scene records (one per image; None: no record, listed as missing)."""
    classes = planted_classes()
    column = {c: j for j, c in enumerate(classes)}
    counts = np.zeros((len(records), len(classes)), dtype=np.int64)
    has = np.zeros(len(records), dtype=bool)
    missing = []
    for i, record in enumerate(records):
        sha = None if sha1s is None else str(sha1s[i])
        if record is None:
            missing.append({"index": i, "sha1": sha, "reason": "no planted scene record"})
            continue
        try:
            for obj in record["objects"]:
                counts[i, column[obj["shape"]]] += 1
            overlays = record.get("overlays") or {}
            graphic = overlays.get("graphic")
            if graphic:
                counts[i, column[graphic["kind"]]] += 1
            counts[i, column["text"]] += len(overlays.get("text") or [])
        except (KeyError, TypeError) as error:
            counts[i] = 0
            missing.append({"index": i, "sha1": sha, "reason": f"unreadable scene record ({error!r})"})
            continue
        has[i] = True
    rule = "a shape is present if the generator drew at least one such object; a graphic kind if drawn; " \
           "text if at least one word was written"
    return Presence("planted_scene", classes, counts > 0, has, missing, counts, rule)


def _store_status(store: OutputStore, sha1s: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(the digests as S40, which have a stored output, the missing ones with the reason) from the store's entries."""
    sha = sha1_array(sha1s)
    entries = store.entries()
    status: dict[bytes, tuple[str, str, str]] = {}
    if len(entries):
        for s, st, reason, stage in zip(sha1_array(entries["sha1"]), entries["status"].to_pylist(),
                                        entries["reason"].to_pylist(), entries["stage"].to_pylist()):
            status[bytes(s)] = (st, reason or "", stage or "")
    has = np.zeros(len(sha), dtype=bool)
    missing = []
    for i, s in enumerate(sha):
        st = status.get(bytes(s))
        if st is not None and st[0] == "ok":
            has[i] = True
            continue
        reason = (f"failed at {st[2] or 'an unknown stage'}: {st[1]}" if st is not None
                  else f"not computed in {store.folder}")
        missing.append({"index": i, "sha1": s.decode(), "reason": reason})
    return sha, has, missing


def _rows(store: OutputStore, name: str) -> pa.Table:
    """A table output's rows; none when the store holds none yet (every image is then listed as missing)."""
    try:
        return store.read_table(name)
    except FileNotFoundError:
        return pa.table({"sha1": pa.array([], pa.string()),
                         **{k: pa.array([], t) for k, t in store.outputs[name].columns.items()}})


def _scatter(sha: np.ndarray, has: np.ndarray, rows: pa.Table, class_index: np.ndarray, keep: np.ndarray,
             n_classes: int) -> np.ndarray:
    """Counts [n_images, n_classes] of the kept rows, by the row's image and class (duplicate digests share rows;
    rows of other images are ignored)."""
    counts = np.zeros((len(sha), n_classes), dtype=np.int64)
    if not len(rows) or not len(sha):
        return counts
    if len(class_index) and (class_index.min() < 0 or class_index.max() >= n_classes):
        raise ValueError(f"stored class ids lie outside the {n_classes} classes of the vocabulary: the store was "
                         "written by another model or vocabulary")
    distinct, inverse = np.unique(sha, return_inverse=True)
    row_sha = sha1_array(rows["sha1"])
    pos = np.minimum(np.searchsorted(distinct, row_sha), len(distinct) - 1)
    ok = keep & (distinct[pos] == row_sha)
    per_digest = np.zeros((len(distinct), n_classes), dtype=np.int64)
    np.add.at(per_digest, (pos[ok], class_index[ok]), 1)
    counts = per_digest[inverse.reshape(-1)]
    counts[~has] = 0
    return counts


def imagenet_presence(store: OutputStore, sha1s: Sequence[str], threshold: float = IMAGENET_THRESHOLD) -> Presence:
    """ImageNet-1k presence from `imagenet_cls`'s ``classes`` output: the top-1 class, and any other stored
    class with probability >= `threshold`."""
    from transforms.neural.imagenet import imagenet_class_names

    _check_fraction("threshold", threshold)
    classes = imagenet_class_names()
    sha, has, missing = _store_status(store, sha1s)
    rows = _rows(store, "classes")
    keep = (pc.equal(rows["rank"], 1).to_numpy(zero_copy_only=False)
            | pc.greater_equal(rows["prob"], threshold).to_numpy(zero_copy_only=False)) if len(rows) else \
        np.zeros(0, dtype=bool)
    ids = rows["class_id"].to_numpy(zero_copy_only=False).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    counts = _scatter(sha, has, rows, ids, keep, len(classes))
    rule = f"the top-1 ImageNet class, and any other of the stored top-k with probability >= {threshold}"
    return Presence("imagenet", classes, counts > 0, has, missing, None, rule)


def lvis_presence(store: OutputStore, sha1s: Sequence[str], score_threshold: float = LVIS_SCORE_THRESHOLD) -> Presence:
    """LVIS presence and detection counts from `object_det`'s ``boxes`` output (detections with score >=
    `score_threshold`)."""
    from transforms.neural.detect import lvis_categories

    _check_fraction("score_threshold", score_threshold)
    classes = [c["name"] for c in lvis_categories()]
    sha, has, missing = _store_status(store, sha1s)
    rows = _rows(store, "boxes")
    keep = pc.greater_equal(rows["score"], score_threshold).to_numpy(zero_copy_only=False) if len(rows) else \
        np.zeros(0, dtype=bool)
    ids = rows["class_id"].to_numpy(zero_copy_only=False).astype(np.int64) - 1 if len(rows) else np.zeros(0, np.int64)
    counts = _scatter(sha, has, rows, ids, keep, len(classes))
    rule = f"an LVIS class with at least one detection of score >= {score_threshold}"
    return Presence("lvis", classes, counts > 0, has, missing, counts, rule)


def ade20k_presence(store: OutputStore, sha1s: Sequence[str], min_share: float = ADE20K_MIN_SHARE) -> Presence:
    """ADE20K presence from `seg`'s ``classes`` output: classes covering at least `min_share` of the image."""
    from transforms.neural.seg import ade20k

    _check_fraction("min_share", min_share)
    classes = list(ade20k()[0])
    sha, has, missing = _store_status(store, sha1s)
    rows = _rows(store, "classes")
    keep = pc.greater_equal(rows["share"], min_share).to_numpy(zero_copy_only=False) if len(rows) else \
        np.zeros(0, dtype=bool)
    ids = rows["class_id"].to_numpy(zero_copy_only=False).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    counts = _scatter(sha, has, rows, ids, keep, len(classes))
    rule = f"an ADE20K class covering at least {min_share} of the image's pixels"
    return Presence("ade20k", classes, counts > 0, has, missing, None, rule)


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"describe.objects: {name} must be a number in [0, 1], got {value!r}")


# --- statistics -------------------------------------------------------------------------------------------

def _check_labels(presence: Presence, labels: np.ndarray, datasets: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (presence.n_images,):
        raise ValueError(f"labels: expected {presence.n_images} (one per image), got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(datasets)):
        raise ValueError(f"labels must index the {len(datasets)} datasets, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def class_shares(presence: Presence, labels: np.ndarray, datasets: Sequence[str],
                 observed_only: bool = True) -> pa.Table:
    """One row per (dataset, class): images (with output), containing (how many contain the class), share.

    Also per dataset: missing (its images without output). `observed_only`: leave out classes no image
    contains (the LVIS and ImageNet vocabularies are large)."""
    labels = _check_labels(presence, labels, datasets)
    keep = presence.present.any(axis=0) if observed_only else np.ones(len(presence.classes), dtype=bool)
    cols: dict[str, list[Any]] = {k: [] for k in ("dataset", "class", "images", "containing", "share", "missing")}
    for d, name in enumerate(datasets):
        rows = (labels == d) & presence.has_output
        n = int(rows.sum())
        contain = presence.present[rows].sum(axis=0)
        n_missing = int(((labels == d) & ~presence.has_output).sum())
        for c in np.flatnonzero(keep):
            cols["dataset"].append(name)
            cols["class"].append(presence.classes[c])
            cols["images"].append(n)
            cols["containing"].append(int(contain[c]))
            cols["share"].append(float(contain[c]) / n if n else float("nan"))
            cols["missing"].append(n_missing)
    schema = pa.schema([("dataset", pa.string()), ("class", pa.string()), ("images", pa.int64()),
                        ("containing", pa.int64()), ("share", pa.float64()), ("missing", pa.int64())],
                       metadata={"source": presence.source, "rule": presence.rule})
    return pa.table(cols, schema=schema)


def unique_per_image(presence: Presence, labels: np.ndarray, datasets: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per dataset: the number of distinct classes in each of its images with output (`values`, box-plot data)
    and their n, mean, min, quartiles (q1, median, q3) and max; `missing`: its images without output."""
    labels = _check_labels(presence, labels, datasets)
    per_image = presence.present.sum(axis=1)
    out = {}
    for d, name in enumerate(datasets):
        values = per_image[(labels == d) & presence.has_output]
        stats: dict[str, Any] = {"values": values.astype(int).tolist(), "n": int(len(values)),
                                 "missing": int(((labels == d) & ~presence.has_output).sum())}
        if len(values):
            q = np.percentile(values, [0, 25, 50, 75, 100])
            stats |= {"mean": float(values.mean()), "min": float(q[0]), "q1": float(q[1]), "median": float(q[2]),
                      "q3": float(q[3]), "max": float(q[4])}
        out[name] = stats
    return out


def box_plot_png(per_dataset: Mapping[str, Sequence[float] | Mapping[str, Any]], title: str = "",
                 ylabel: str = "unique classes per image", dpi: int = 100) -> bytes:
    """A box plot (one box per dataset, quartiles and 1.5 IQR whiskers) as PNG bytes.

    `per_dataset`: name -> values, or `unique_per_image`'s output (its ``values`` are used). Drawn on a
    matplotlib `Figure` with the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(per_dataset)
    values = [list(v["values"]) if isinstance(v, Mapping) else list(v) for v in per_dataset.values()]
    fig = Figure(figsize=(max(3.0, 1.2 * len(names) + 1.5), 3.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.boxplot([v if v else [np.nan] for v in values], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def select_classes(presence: Presence, labels: np.ndarray, datasets: Sequence[str], max_classes: int) -> np.ndarray:
    """The columns to model: classes that vary among the images with output, the `max_classes` with the highest
    share in any one dataset (ties by name order)."""
    labels = _check_labels(presence, labels, datasets)
    x = presence.present[presence.has_output]
    y = labels[presence.has_output]
    varies = x.any(axis=0) & ~x.all(axis=0)
    top = np.zeros(len(presence.classes))
    for d in range(len(datasets)):
        if (y == d).any():
            top = np.maximum(top, x[y == d].mean(axis=0))
    candidates = np.flatnonzero(varies)
    order = candidates[np.argsort(-top[candidates], kind="stable")]
    return np.sort(order[:max_classes])


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, c: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-8, start: np.ndarray | None = None) -> np.ndarray:
    """L2-penalised logistic regressions, one per row of `weights`, fitted together by Newton's method.

    Minimises, per replicate b, sum_i weights[b, i] * logloss(y_i, x_i . w_b + w0_b) + ||w_b||^2 / (2c)
    (the intercept w0 unpenalised): scikit-learn's ``LogisticRegression(C=c)`` objective with sample weights.
    x: [n, p]; y: [n] in {0, 1}; weights: [B, n] >= 0; start: [p + 1] where every replicate starts (default 0).
    Returns [B, p + 1] (the coefficients, then the intercept).
    Each step is halved until the objective does not increase, so it converges even where the classes are
    (nearly) separable and the penalty does all the work.

    Kept instead of one scikit-learn fit per replicate (the point estimate equals sklearn's, tested) because it
    fits all bootstrap replicates at once: about 3x faster (2.8-3.4x) for `ovr_ranking`'s 200 refits on 1,500 images x 30
    classes (`benchmarks/bench_stats.py --objects`, benchmarks/results/describe.md).
    """
    x, y, w = _pool_identical_rows(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                                   np.atleast_2d(np.asarray(weights, dtype=np.float64)))
    x1 = np.hstack([x, np.ones((len(x), 1))])
    n_rep, p1 = w.shape[0], x1.shape[1]
    pen = np.full(p1, 1.0 / c)
    pen[-1] = 0.0
    beta = np.zeros((n_rep, p1)) if start is None else np.tile(np.asarray(start, dtype=np.float64), (n_rep, 1))
    loss = objective_rows(beta, x1, y, w, pen)
    active = np.ones(n_rep, dtype=bool)
    chunk = max(1, int(4_000_000 // max(1, x1.shape[0] * p1)))  # bounds the [chunk, p+1, n] intermediate
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        step = np.empty((len(idx), p1))
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            mu = 1.0 / (1.0 + np.exp(-(beta[sel] @ x1.T)))
            grad = (w[sel] * (mu - y)) @ x1 + pen * beta[sel]
            hess = np.matmul(x1.T[None] * (w[sel] * mu * (1 - mu))[:, None, :], x1) + np.diag(pen + 1e-10)[None]
            step[start:start + len(sel)] = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones(len(idx))
        for _ in range(30):
            trial = beta[idx] - t[:, None] * step
            new = objective_rows(trial, x1, y, w[idx], pen)
            worse = new > loss[idx] + 1e-12 * np.abs(loss[idx])
            if not worse.any():
                break
            t[worse] *= 0.5
        beta[idx] = trial
        loss[idx] = new
        active[idx] = np.abs(t[:, None] * step).max(axis=1) > tol
    return beta


def _pool_identical_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with the same (x, y) as one row whose weight is the sum of theirs: the same objective, and far
    fewer rows on binary presence (many images contain the same set of classes)."""
    xy = np.hstack([x, y[:, None]])
    unique, inverse = np.unique(xy, axis=0, return_inverse=True)
    if len(unique) == len(xy):
        return x, y, w
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(unique)))
    return unique[:, :-1], unique[:, -1], np.add.reduceat(w[:, order], starts, axis=1)


def objective_rows(beta: np.ndarray, x1: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray) -> np.ndarray:
    """The penalised weighted log loss of each row of `beta` (see `fit_logistic`)."""
    eta = beta @ x1.T
    return (w * (np.logaddexp(0.0, eta) - y * eta)).sum(axis=1) + 0.5 * (pen * beta * beta).sum(axis=1)


def ovr_ranking(presence: Presence, labels: np.ndarray, datasets: Sequence[str], *, max_classes: int = 30,
                n_boot: int = 200, c: float = 1.0, alpha: float = 0.05, seed: int = 0) -> pa.Table:
    """One-vs-rest logistic regression of dataset membership on binary presence, classes ranked per dataset.

    Per dataset d: y = (label == d) over the images with output, x = presence of the `select_classes` columns;
    the coefficients (log-odds of being from d when the class is present, the other classes held fixed) come
    from `fit_logistic` with penalty 1/(2c); their (1 - alpha) intervals are percentiles of `n_boot` bootstrap
    refits (images resampled with replacement; the resampling weights drawn from ``numpy.random.default_rng
    ([seed, d])``). Rows: dataset, rank (1 = most indicative of the dataset), class, coef, ci_low, ci_high,
    excludes_zero, share_in (of d's images), share_out (of the others'). The schema metadata records the source,
    seed, n_boot, c, alpha, the classes modelled and the datasets skipped (no image with output in or out of
    them, or no class that varies).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ConfigError(f"describe.objects: n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"describe.objects: alpha must lie in (0, 1), got {alpha!r}")
    if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 1:
        raise ConfigError(f"describe.objects: max_classes must be an integer >= 1, got {max_classes!r}")
    labels = _check_labels(presence, labels, datasets)
    cols = select_classes(presence, labels, datasets, max_classes)
    x = presence.present[presence.has_output][:, cols].astype(np.float64)
    lab = labels[presence.has_output]
    names = [presence.classes[j] for j in cols]
    out: dict[str, list[Any]] = {k: [] for k in ("dataset", "rank", "class", "coef", "ci_low", "ci_high",
                                                 "excludes_zero", "share_in", "share_out")}
    n = len(lab)
    skipped = []
    for d, name in enumerate(datasets):
        y = (lab == d).astype(np.float64)
        if not len(cols) or y.sum() in (0, n):
            skipped.append(name)
            continue
        full = fit_logistic(x, y, np.ones((1, n)), c)[0]
        point = full[:-1]
        if n_boot:
            rng = np.random.default_rng([seed, d])
            boot_w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
            boot = fit_logistic(x, y, boot_w, c, start=full)[:, :-1]
            low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        else:
            low = high = np.full(len(cols), np.nan)
        share_in, share_out = x[y == 1].mean(axis=0), x[y == 0].mean(axis=0)
        for rank, j in enumerate(np.argsort(-point, kind="stable"), start=1):
            out["dataset"].append(name)
            out["rank"].append(rank)
            out["class"].append(names[j])
            out["coef"].append(float(point[j]))
            out["ci_low"].append(float(low[j]))
            out["ci_high"].append(float(high[j]))
            out["excludes_zero"].append(bool(low[j] > 0 or high[j] < 0))
            out["share_in"].append(float(share_in[j]))
            out["share_out"].append(float(share_out[j]))
    meta = {"source": presence.source, "seed": str(seed), "n_boot": str(n_boot), "c": str(c), "alpha": str(alpha),
            "classes": json.dumps(names), "skipped": json.dumps(skipped)}
    schema = pa.schema([("dataset", pa.string()), ("rank", pa.int64()), ("class", pa.string()),
                        ("coef", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
                        ("excludes_zero", pa.bool_()), ("share_in", pa.float64()), ("share_out", pa.float64())],
                       metadata=meta)
    return pa.table(out, schema=schema)


def table_records(table: pa.Table) -> dict[str, Any]:
    """A table as JSON-ready {"meta": its schema metadata, "rows": one dict per row} (NaN as None)."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in table.to_pylist()]
    return {"meta": meta, "rows": rows}
