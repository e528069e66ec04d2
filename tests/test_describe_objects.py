"""describe.objects, describe.language and the imagenet_cls transform: known answers on constructed presence
matrices, scene records, count tables and captions; the readers of object_det / seg / imagenet_cls stores
written in the real store format; a tiny random timm classifier through the runner; and the packaged
EfficientNet-Lite0 on real photos shipped with scikit-image."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from bias.core.errors import ConfigError
from bias.data.planted import DatasetParams, render_scene
from bias.data.planted_scene import long_caption
from bias.inference.models import weight_source, weights_config
from bias.inference.runner import run_batched
from bias.inference.store import OutputStore
from bias.inference.weights import WeightIntegrityError, WeightSource
from describe.language import (
    dataset_word_clouds,
    distinctive_words,
    lda_topics,
    log_odds_z,
    tokenize,
    word_cloud,
    word_cloud_png,
)
from describe.objects import (
    Presence,
    ade20k_presence,
    box_plot_png,
    class_shares,
    fit_logistic,
    imagenet_presence,
    lvis_presence,
    ovr_ranking,
    planted_classes,
    planted_presence,
    table_records,
    unique_per_image,
)
from tests.image_factory import save_pngs
from transforms.base import output_store
from transforms.neural.detect import ObjectDetection
from transforms.neural.imagenet import (
    PACKAGED_WEIGHTS,
    ImageNetClassifier,
    imagenet_class_names,
    map_state_dict,
)
from transforms.neural.random_init import seeded
from transforms.neural.seg import SemanticSegmentation
from transforms.neural.seg import class_shares as seg_class_shares
from transforms.registry import create_transform

ROOT = Path(__file__).resolve().parent.parent
#: timm's tiny test EfficientNet (about 0.36 M parameters) at 32 px: the code path, not the answers
TINY = {"model_name": "test_efficientnet", "weights": None, "arch": {}, "size": 32, "top_k": 3, "batch_size": 2}


def sha(i: int) -> str:
    return f"{i:040x}"


# --- planted scene records ----------------------------------------------------------------------------------

def record(shapes: list[str], graphic: str | None = None, words: int = 0) -> dict:
    objects = [{"shape": s, "rgb": [200, 30, 30], "size": 0.2, "center": [0.5, 0.5], "outlined": False} for s in shapes]
    overlays = {"graphic": None if graphic is None else {"kind": graphic, "rgb": [0, 0, 0]},
                "text": [{"text": f"W{k}", "rgb": [0, 0, 0]} for k in range(words)]}
    return {"objects": objects, "overlays": overlays, "background": {"kind": "white", "rgb": [255, 255, 255]}}


def test_planted_presence_recovers_the_counts_per_image():
    records = [record(["circle", "circle", "star"], "banner", 2), record([]), None, record(["cross"], "logo")]
    p = planted_presence(records, [sha(i) for i in range(4)])
    classes = planted_classes()
    assert classes[:3] == ["circle", "ellipse", "square"] and classes[-5:] == ["banner", "bar", "logo", "frame", "text"]
    col = {c: j for j, c in enumerate(classes)}
    expected = np.zeros((4, len(classes)), dtype=int)
    expected[0, [col["circle"], col["star"], col["banner"], col["text"]]] = [2, 1, 1, 2]
    expected[3, [col["cross"], col["logo"]]] = 1
    assert np.array_equal(p.counts, expected) and np.array_equal(p.present, expected > 0)
    assert p.has_output.tolist() == [True, True, False, True]
    assert p.missing == [{"index": 2, "sha1": sha(2), "reason": "no planted scene record"}]
    stats = unique_per_image(p, np.array([0, 0, 1, 1]), ["a", "b"])
    assert stats["a"]["values"] == [4, 0] and stats["b"]["values"] == [2]
    assert (stats["a"]["median"], stats["b"]["n"], stats["b"]["missing"]) == (2.0, 1, 1)


def test_planted_presence_on_rendered_records_keeps_each_vocabulary():
    """Real records of two pure vocabularies: every object counted once, no class outside its dataset's shapes."""
    vocab = {"round": {"circle": 1.0, "ellipse": 1.0}, "pointy": {"star": 1.0, "triangle": 1.0}}
    records, labels = [], []
    for d, (name, shapes) in enumerate(vocab.items()):
        params = DatasetParams.from_mapping({"shapes": {"vocabulary": shapes}, "layout": {"count": [1, 4]}})
        for i in range(12):
            records.append(render_scene(params, seed=3, dataset=name, index=i, size=48)[1])
            labels.append(d)
    p = planted_presence(records)
    for i, rec in enumerate(records):
        shape_counts = Counter(o["shape"] for o in rec["objects"])
        assert {c: int(n) for c, n in zip(p.classes, p.counts[i]) if n} == shape_counts  # no overlays drawn here
    shares = {(r["dataset"], r["class"]): r["share"] for r in class_shares(p, np.array(labels), list(vocab)).to_pylist()}
    assert {c for (d, c), s in shares.items() if d == "round" and s > 0} <= {"circle", "ellipse"}
    assert {c for (d, c), s in shares.items() if d == "pointy" and s > 0} <= {"star", "triangle"}
    assert shares[("round", "circle")] > 0 and shares[("pointy", "star")] > 0


# --- shares, unique classes, box plot ----------------------------------------------------------------------

def constructed() -> tuple[Presence, np.ndarray]:
    present = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1],  # dataset a (image 3: no output)
                        [0, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=bool)  # dataset b
    has = np.array([True, True, True, False, True, True, True])
    present[~has] = False
    return Presence("test", ["cat", "dog", "kite"], present, has,
                    [{"index": 3, "sha1": sha(3), "reason": "x"}]), np.array([0, 0, 0, 0, 1, 1, 1])


def test_class_shares_are_exact_on_a_constructed_matrix():
    p, labels = constructed()
    table = class_shares(p, labels, ["a", "b"])
    got = {(r["dataset"], r["class"]): (r["containing"], r["images"], r["share"], r["missing"]) for r in table.to_pylist()}
    assert got == {("a", "cat"): (2, 3, 2 / 3, 1), ("a", "dog"): (1, 3, 1 / 3, 1), ("a", "kite"): (0, 3, 0.0, 1),
                   ("b", "cat"): (0, 3, 0.0, 0), ("b", "dog"): (2, 3, 2 / 3, 0), ("b", "kite"): (2, 3, 2 / 3, 0)}
    assert table.schema.metadata[b"source"] == b"test"
    buf = io.BytesIO()
    pq.write_table(table, buf)
    assert pq.read_table(io.BytesIO(buf.getvalue())).equals(table)
    stats = unique_per_image(p, labels, ["a", "b"])
    assert stats["a"]["values"] == [1, 2, 0] and stats["b"]["values"] == [1, 2, 1]
    assert (stats["a"]["mean"], stats["b"]["q3"]) == (1.0, 1.5)
    png = box_plot_png(stats, title="unique classes")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and (image < 128).any()  # drawn, not blank
    assert png == box_plot_png(stats, title="unique classes")  # no timestamp in the file


# --- one-vs-rest ranking -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ranking_data() -> tuple[Presence, np.ndarray]:
    """Three datasets of 60 images; "kite" only in dataset a (70% of its images); the rest share one rate."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 60)
    present = rng.random((180, 6)) < 0.3
    present[:, 0] = (labels == 0) & (rng.random(180) < 0.7)
    return Presence("test", ["kite", "cat", "dog", "car", "tree", "cup"], present, np.ones(180, bool)), labels


def test_ovr_ranking_puts_a_class_unique_to_a_dataset_first_with_a_ci_excluding_zero(ranking_data):
    p, labels = ranking_data
    table = ovr_ranking(p, labels, ["a", "b", "c"], n_boot=100, seed=3)
    rows = table.to_pylist()
    first_a = next(r for r in rows if r["dataset"] == "a" and r["rank"] == 1)
    assert first_a["class"] == "kite" and first_a["ci_low"] > 0 and first_a["excludes_zero"]
    assert (first_a["share_in"], first_a["share_out"]) == (pytest.approx(np.mean(p.present[:60, 0])), 0.0)
    for d in ("b", "c"):  # kite is absent there: it ranks last, with a negative coefficient
        last = max((r for r in rows if r["dataset"] == d), key=lambda r: r["rank"])
        assert last["class"] == "kite" and last["coef"] < 0
    meta = table_records(table)["meta"]
    assert (meta["seed"], meta["n_boot"]) == ("3", "100") and json.loads(meta["classes"])[0] == "kite"
    again = ovr_ranking(p, labels, ["a", "b", "c"], n_boot=100, seed=3)
    assert again.equals(table)  # seeded
    assert not ovr_ranking(p, labels, ["a", "b", "c"], n_boot=100, seed=4).equals(table)


def test_vectorised_logistic_regression_matches_scikit_learn(ranking_data):
    from sklearn.linear_model import LogisticRegression

    p, labels = ranking_data
    x, y = p.present.astype(float), (labels == 0).astype(float)
    weights = np.random.default_rng(0).multinomial(len(y), np.full(len(y), 1 / len(y)), size=2).astype(float)
    ours = fit_logistic(x, y, np.vstack([np.ones(len(y)), weights]), c=0.5)
    for row, w in zip(ours, [np.ones(len(y)), *weights]):
        ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(x, y, sample_weight=w)
        assert np.allclose(row[:-1], ref.coef_[0], atol=1e-5) and row[-1] == pytest.approx(ref.intercept_[0], abs=1e-5)


# --- readers of the transforms' stores ---------------------------------------------------------------------

def write_store(folder: Path, outputs, items: dict[str, dict], failed: tuple[str, ...] = ()) -> OutputStore:
    store = OutputStore(folder, outputs)
    writer = store.writer()
    for s, out in items.items():
        writer.put(s, out)
    for s in failed:
        writer.fail(s, "cannot identify image file", "transform")
    writer.close()
    store.merge()
    return store


def test_lvis_reader_thresholds_scores_and_lists_images_without_output(tmp_path):
    white = np.full((8, 8, 3), 255, np.uint8)
    boxes = {"x0": [0.0, 1.0, 2.0], "y0": [0.0, 1.0, 2.0], "x1": [4.0, 5.0, 6.0], "y1": [4.0, 5.0, 6.0],
             "class_id": [1, 1, 5], "class_name": ["aerosol can", "aerosol can", "alcohol"], "score": [0.9, 0.7, 0.3]}
    empty = {k: [] for k in boxes}
    store = write_store(tmp_path / "det", ObjectDetection.outputs,
                        {sha(0): {"image": white, "boxes": boxes}, sha(1): {"image": white, "boxes": empty}},
                        failed=(sha(2),))
    p = lvis_presence(store, [sha(0), sha(1), sha(2), sha(3), sha(0)], score_threshold=0.5)
    assert len(p.classes) == 1203 and p.classes[0] == "aerosol can" and p.classes[4] == "alcohol"
    assert p.has_output.tolist() == [True, True, False, False, True]
    assert {j: int(n) for j, n in enumerate(p.counts[0]) if n} == {0: 2}  # the alcohol scored under 0.5
    assert np.array_equal(p.counts[4], p.counts[0]) and not p.present[1].any()
    assert [(m["index"], m["reason"].split(":")[0]) for m in p.missing] == [(2, "failed at transform"),
                                                                             (3, f"not computed in {store.folder}")]
    assert lvis_presence(store, [sha(0)], score_threshold=0.2).counts[0, 4] == 1
    assert p.observed().classes == ["aerosol can"]


def test_ade20k_reader_keeps_classes_above_the_pixel_share(tmp_path):
    ids = np.zeros((20, 20), np.uint8)
    ids[:4, :9] = 3        # 36 px = 9%
    ids[19, 19] = 7        # 1 px = 0.25%
    store = write_store(tmp_path / "seg", SemanticSegmentation.outputs,
                        {sha(0): {"image": np.zeros((20, 20, 3), np.uint8), "classes": seg_class_shares(ids)}})
    p = ade20k_presence(store, [sha(0), sha(1)], min_share=0.01)
    assert [p.classes[j] for j in np.flatnonzero(p.present[0])] == [p.classes[0], p.classes[3]]
    assert p.has_output.tolist() == [True, False] and len(p.classes) == 150 and p.missing[0]["sha1"] == sha(1)
    assert ade20k_presence(store, [sha(0)], min_share=0.001).present[0, 7]


def test_imagenet_reader_takes_the_top1_and_classes_above_the_threshold(tmp_path):
    names = imagenet_class_names()
    rows = {"rank": [1, 2, 3], "class_id": [285, 281, 7], "class_name": [names[285], names[281], names[7]],
            "prob": [0.4, 0.25, 0.1]}
    store = write_store(tmp_path / "inet", ImageNetClassifier.outputs, {sha(0): {"classes": rows}})
    assert np.flatnonzero(imagenet_presence(store, [sha(0)], threshold=0.2).present[0]).tolist() == [281, 285]
    assert np.flatnonzero(imagenet_presence(store, [sha(0)], threshold=0.5).present[0]).tolist() == [285]
    with pytest.raises(ConfigError, match="threshold"):
        imagenet_presence(store, [sha(0)], threshold=2)


# --- imagenet_cls ------------------------------------------------------------------------------------------

def test_imagenet_class_names_come_from_timm_offline_and_are_unique():
    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[285], names[967]) == ("tench", "Egyptian cat", "espresso")
    assert names[134] == "crane (n02012849)" and names[517] == "crane (n03126707)"


def test_state_dict_mapping_in_order_checks_every_shape():
    target = {"conv.weight": torch.zeros(4, 3), "bn.num_batches_tracked": torch.zeros(()), "fc.bias": torch.zeros(2)}
    source = {"_conv.w": torch.ones(4, 3), "_fc.b": torch.full((2,), 2.0), "_bn.num_batches_tracked": torch.ones(())}
    mapped = map_state_dict(source, target, "auto")
    assert set(mapped) == {"conv.weight", "fc.bias"} and torch.equal(mapped["fc.bias"], torch.full((2,), 2.0))
    with pytest.raises(ConfigError, match=r"tensor 1 of the weights, _fc.b \(3,\)"):
        map_state_dict({"_conv.w": torch.ones(4, 3), "_fc.b": torch.ones(3)}, target)
    with pytest.raises(ConfigError, match="hold 1 tensors and the model 2"):
        map_state_dict({"_conv.w": torch.ones(4, 3)}, target)
    with pytest.raises(ConfigError, match="missing"):
        map_state_dict(source, target, "exact")


def test_packaged_weights_are_pinned_and_a_wrong_sha256_is_refused():
    path = weight_source(PACKAGED_WEIGHTS).resolve()
    assert path.name == "efficientnet-lite0-57934424.pth"
    with pytest.raises(WeightIntegrityError, match="not the pinned"):
        WeightSource.from_config({**weights_config(PACKAGED_WEIGHTS), "sha256": "0" * 64}).resolve()
    with pytest.raises(ConfigError, match="not a timm model name"):
        ImageNetClassifier(model_name="no_such_net").check_ready()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[list[str], list[str]]:
    import skimage.data

    return save_pngs(tmp_path_factory.mktemp("photos"), [skimage.data.chelsea(), skimage.data.coffee()])


def test_tiny_random_classifier_runs_through_the_runner_and_reuses_its_cache(tmp_path, photos):
    paths, shas = photos
    transform = create_transform("imagenet_cls", **TINY)
    transform.check_ready(tmp_path)
    store = output_store(transform, tmp_path, None)
    first = run_batched(transform, paths, shas, store, num_workers=0, show_progress=False)
    assert (first.computed, first.reused, first.failed) == (2, 0, [])
    table = store.read_table("classes").sort_by([("sha1", "ascending"), ("rank", "ascending")])
    # the same seeded network on the same canvas, run here directly: the stored top-3 are its top-3
    import timm

    network = seeded(lambda: timm.create_model("test_efficientnet", pretrained=False, num_classes=1000)).eval()
    for s, path in zip(shas, paths):
        rows = [r for r in table.to_pylist() if r["sha1"] == s]
        pixels = transform.preprocess(np.asarray(Image.open(path).convert("RGB")))["pixels"][None]
        with torch.inference_mode():
            probs, ids = network(transform.normalise(pixels)).float().softmax(-1).topk(3)
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert [r["class_id"] for r in rows] == ids[0].tolist()
        assert np.allclose([r["prob"] for r in rows], probs[0].numpy(), atol=1e-5)
        assert [r["class_name"] for r in rows] == [imagenet_class_names()[i] for i in ids[0].tolist()]
    second = run_batched(create_transform("imagenet_cls", **TINY), paths, shas, store, num_workers=0,
                         show_progress=False)
    assert (second.computed, second.reused) == (0, 2)
    assert create_transform("imagenet_cls", **{**TINY, "top_k": 4}).cache_key() != transform.cache_key()


def test_packaged_efficientnet_lite0_names_a_cat_and_an_espresso(tmp_path, photos):
    """The real packaged weights on skimage's chelsea (a cat) and coffee (a cup of espresso)."""
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "transform" / "imagenet_cls.yaml"))
    name = config.pop("name")
    transform = create_transform(name, **{**config, "device": "cpu"})
    assert transform.weights == PACKAGED_WEIGHTS
    paths, shas = photos
    report = run_batched(transform, paths, shas, output_store(transform, tmp_path, None), num_workers=0,
                         show_progress=False)
    assert report.failed == []
    rows = report.store.read_table("classes").to_pylist()
    top3 = {s: [r["class_name"] for r in sorted((r for r in rows if r["sha1"] == s), key=lambda r: r["rank"])][:3]
            for s in shas}
    probs = {(r["sha1"], r["class_name"]): r["prob"] for r in rows}
    # fed as timm feeds the checkpoint (resize, centre crop 0.875, bicubic): measured tiger cat 0.39, Egyptian cat
    # 0.36, tabby 0.17; espresso 0.95
    assert transform.preprocessing()["from"] == "checkpoint" and transform.preprocessing()["crop_pct"] == 0.875
    assert set(top3[shas[0]]) == {"tiger cat", "Egyptian cat", "tabby"} and probs[(shas[0], "Egyptian cat")] > 0.25
    assert top3[shas[1]][0] == "espresso" and probs[(shas[1], "espresso")] > 0.85
    presence = imagenet_presence(report.store, shas)
    assert presence.present[0, 285] and presence.present[1, 967] and presence.has_output.all()
    # the whole image stretched to 224 (an override, which says so): measured Egyptian cat 0.78
    stretched = create_transform(name, **{**config, "device": "cpu", "fit": "stretch", "size": 224})
    with pytest.warns(UserWarning, match=r"departs from the checkpoint's own: fit=stretch \(checkpoint: resize, "):
        stretched.check_ready(tmp_path)
    again = run_batched(stretched, paths, shas, output_store(stretched, tmp_path, None), num_workers=0,
                        show_progress=False)
    rows = [r for r in again.store.read_table("classes").to_pylist() if r["sha1"] == shas[0] and r["rank"] == 1]
    assert rows[0]["class_name"] == "Egyptian cat" and rows[0]["prob"] > 0.7


# --- language ----------------------------------------------------------------------------------------------

def test_tokenizer_lowercases_and_drops_stop_words_digits_and_possessives():
    assert tokenize("The image shows Two RED circles, a star's outline and $12.50 of TEXT!") == \
        ["two", "red", "circles", "star", "outline", "text"]
    assert tokenize("") == [] and tokenize("a an the of") == []


def themed_captions(seed: int = 0) -> tuple[list[str | None], np.ndarray]:
    """Dataset a: captions about red circles or green squares; b: about blue stars; shared filler; one None."""
    rng = np.random.default_rng(seed)
    themes = {0: [["circle", "red", "round"], ["square", "green", "corner"]], 1: [["star", "blue", "pointy"]]}
    filler = ["shape", "drawn", "small", "large", "centre"]
    captions, labels = [], []
    for d, options in themes.items():
        for i in range(40):
            words = list(options[i % len(options)]) * 2 + list(rng.choice(filler, 2))
            rng.shuffle(words)
            captions.append("A " + " ".join(words) + ".")
            labels.append(d)
    captions[5] = None
    return captions, np.array(labels)


def test_lda_finds_the_planted_themes_and_gives_five_by_five_topics():
    captions, labels = themed_captions()
    two = lda_topics(captions, labels, ["a", "b"], n_topics=2, n_words=3, seed=0)
    tops = sorted(sorted(t["words"]) for t in two["datasets"]["a"]["topics"])
    assert tops == [["circle", "red", "round"], ["corner", "green", "square"]]
    assert two["missing"] == [{"index": 5, "dataset": "a"}] and two["datasets"]["a"]["n_captions"] == 39
    five = lda_topics(captions, labels, ["a", "b"], seed=0)
    assert [len(t["words"]) for t in five["datasets"]["b"]["topics"]] == [5] * 5
    b_words = {w for t in five["datasets"]["b"]["topics"] for w in t["words"]}
    assert {"star", "blue", "pointy"} <= b_words and not b_words & {"circle", "square", "red", "green"}
    assert lda_topics(captions, labels, ["a", "b"], seed=0) == five  # seeded


def test_log_odds_z_known_answer_by_hand():
    delta, z = log_odds_z(np.array([4, 0, 1]), np.array([1, 2, 2]), np.array([1.0, 1.0, 1.0]))
    # n_i = n_j = 5, a_0 = 3: word 0: log(5/3) - log(2/6) = log 5, var = 1/5 + 1/2
    assert delta == pytest.approx([math.log(5), math.log(5 / 21), math.log(5 / 9)])
    assert z == pytest.approx([math.log(5) / math.sqrt(0.7), math.log(5 / 21) / math.sqrt(4 / 3),
                               math.log(5 / 9) / math.sqrt(5 / 6)])
    # captions: a "circle circle red", b "star red"; prior = pooled counts circle 2, red 2, star 1 (a_0 = 5)
    table = distinctive_words(["circle circle red", "star red"], np.array([0, 1]), ["a", "b"], top=3)
    rows = {(r["dataset"], r["word"]): r for r in table.to_pylist()}
    circle = rows[("a", "circle")]
    assert circle["rank"] == 1 and (circle["count_in"], circle["count_out"]) == (2, 0)
    assert circle["delta"] == pytest.approx(math.log(2.5))  # log(4/4) - log(2/5)
    assert circle["z"] == pytest.approx(math.log(2.5) / math.sqrt(1 / 4 + 1 / 2))
    assert rows[("b", "star")]["rank"] == 1


def test_distinctive_words_are_the_planted_vocabulary():
    captions, labels = themed_captions()
    table = distinctive_words(captions, labels, ["a", "b"], top=6)
    by = {d: [r for r in table.to_pylist() if r["dataset"] == d] for d in ("a", "b")}
    assert {r["word"] for r in by["b"][:3]} == {"star", "blue", "pointy"} and all(r["z"] > 3 for r in by["b"][:3])
    assert {r["word"] for r in by["a"][:6]} == {"circle", "red", "round", "square", "green", "corner"}
    assert table.schema.metadata[b"missing_captions"] == b"1"
    # ground-truth captions of rendered planted scenes (two objects each): circles against stars
    texts, labs = [], []
    for d, shapes in enumerate([{"circle": 1.0}, {"star": 1.0}]):
        params = DatasetParams.from_mapping({"shapes": {"vocabulary": shapes}, "layout": {"count": [2, 2]}})
        for i in range(12):
            texts.append(long_caption(render_scene(params, seed=1, dataset=f"d{d}", index=i, size=48)[1]))
            labs.append(d)
    planted = distinctive_words(texts, np.array(labs), ["round", "pointy"], top=1).to_pylist()
    assert [(r["dataset"], r["word"]) for r in planted] == [("round", "circles"), ("pointy", "stars")]


def test_word_cloud_is_drawn_and_deterministic_under_the_seed():
    freqs = {"circle": 10, "red": 6, "star": 3, "blue": 2}
    a = word_cloud(freqs, seed=0, width=200, height=100)
    assert a.shape == (100, 200, 3) and a.dtype == np.uint8
    assert (a.min(axis=2) < 200).mean() > 0.05  # words drawn on the white background
    assert np.array_equal(a, word_cloud(freqs, seed=0, width=200, height=100))
    assert not np.array_equal(a, word_cloud(freqs, seed=1, width=200, height=100))
    png = word_cloud_png(freqs, seed=0, width=200, height=100)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), a)
    captions, labels = themed_captions()
    clouds = dataset_word_clouds(captions + [""], np.append(labels, 2), ["a", "b", "c"], seed=0, width=120, height=60)
    assert sorted(clouds["clouds"]) == ["a", "b"] and clouds["without_words"] == ["c"] and len(clouds["missing"]) == 1
    with pytest.raises(ValueError, match="no word"):
        word_cloud({})


def test_outputs_serialise_to_json():
    p, labels = constructed()
    payload = {"shares": table_records(class_shares(p, labels, ["a", "b"])), "summary": p.summary(),
               "unique": unique_per_image(p, labels, ["a", "b"])}
    assert json.loads(json.dumps(payload))["summary"]["n_missing"] == 1
    assert pa.Table.from_pylist(payload["shares"]["rows"]).num_rows == 6
