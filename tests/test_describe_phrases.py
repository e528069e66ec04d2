"""Readable, honest phrases (issue 19 point 3): caption n-grams without function words, number groups as one trait,
class names with their article, broader WordNet levels, and shares of the scored images."""

from __future__ import annotations

import numpy as np

from describe.phrases import (
    Phrase,
    caption_phrases,
    distinctive_phrases,
    is_content,
    number_group,
    phrase_present,
    runs,
)
from describe.stages import _youden_shares, object_ratios


def test_captions_are_cut_at_function_words_and_bare_numbers_are_never_candidates():
    assert runs("Seven small shapes of three kinds, including two circles, on a white background.") == [
        ["seven", "small", "shapes"], ["three"], ["two", "circles"], ["white", "background"]]
    phrases, present = caption_phrases(["Seven small shapes on a white background."])
    texts = {p.text for p in phrases}
    assert Phrase(("<number>", "small", "shapes"), (7,)) in phrases
    assert {"small shapes", "seven small shapes", "white background", "shapes"} <= texts
    assert not texts & {"seven", "on", "a", "on a", "shapes on"}  # no bare number, no function word, no crossing
    assert present.all()
    assert not is_content("seven") and not is_content("including") and not is_content("the kinds")
    assert is_content("white background") and is_content("seven shapes")


def test_hyphenated_words_stay_whole():
    """WordNet names such as "even-toed ungulate" are one trait, never the fragment "toed ungulate"."""
    assert runs("a llama (a kind of even-toed ungulate, mammal), a ping-pong ball") == [
        ["llama"], ["even-toed", "ungulate"], ["mammal"], ["ping-pong", "ball"]]
    texts = {p.text for p in caption_phrases(["an even-toed ungulate"])[0]}
    assert "even-toed ungulate" in texts and "toed ungulate" not in texts


def test_numbers_group_into_one_trait():
    assert number_group([7, 8, 11]) == "seven/eight/eleven" and number_group([5, 6, 7, 9, 12]) == "five to twelve"
    captions = ["Seven shapes on a cluttered background.", "Eight shapes on a cluttered background.",
                "Eleven shapes on a cluttered background.", "One shape on a white background.",
                "Two shapes on a white background.", "One shape on a cluttered background."]
    labels = np.array([0, 0, 0, 1, 1, 1])
    found = distinctive_phrases(captions * 4, np.tile(labels, 4), ["many", "few"], top=10, min_z=1.0)
    many = [p.text for p, _ in found["many"]]
    assert "seven/eight/eleven shapes" in many and not any(t in ("seven shapes", "eight shapes") for t in many)
    assert "cluttered background" in many and "white background" in [p.text for p, _ in found["few"]]
    assert many[0] == "seven/eight/eleven shapes"  # in every caption of the dataset, none of the rest
    grouped = next(p for p, _ in found["many"] if p.text == "seven/eight/eleven shapes")
    # the trait counts an image when any member number occurs; a number outside the group does not count
    assert phrase_present(grouped, ["Eight shapes here.", "Two shapes here.", None]).tolist() == [True, False, False]
    assert phrase_present(Phrase(("white", "background")), ["a white background", "a white wall"]).tolist() == [
        True, False]


def test_phrases_present_in_the_same_captions_as_a_better_one_are_dropped():
    captions = ["a red kite in the sky"] * 6 + ["a green field"] * 6
    labels = np.array([0] * 6 + [1] * 6)
    found = distinctive_phrases(captions, labels, ["kites", "fields"], top=10, min_z=0.5)
    assert len(found["kites"]) == 1  # red, kite, red kite, sky all mark the same six captions: one phrase


def test_object_classes_rank_by_z_and_identical_levels_keep_the_shortest_name():
    labels = np.array([0] * 10 + [1] * 10)
    animal = np.r_[np.ones(8), np.zeros(10), 1, 0].astype(bool)  # 8 of 10 vs 1 of 10
    rare = np.r_[1, np.zeros(19)].astype(bool)                   # 1 of 10 vs 0: a big ratio, weak evidence
    matrix = np.column_stack([animal, animal, rare])
    keys = ["wordnet:chordate", "wordnet:animal", "imagenet:piggy bank"]
    out = object_ratios(matrix, keys, labels, ["a", "b"])
    assert [c for c, _, _ in out["a"]] == ["animal", "piggy bank"]  # chordate: the same images, longer name
    (name, ratio, z), (_, rare_ratio, rare_z) = out["a"]
    assert z > 2 > rare_z and ratio < rare_ratio * 10


def test_similarity_shares_use_the_best_separating_threshold():
    sim = np.array([0.9, 0.8, 0.7, 0.2, 0.85, 0.1, 0.1, 0.1])
    mine = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    assert _youden_shares(sim, mine) == (1.0, 0.25)  # at 0.2: all four against one of four


def test_a_longer_phrase_replaces_a_fragment_it_covers():
    captions = ["Two large shapes on a white background."] * 5 + ["One large shape, white background."] * 1 + \
        ["Nine small shapes on a cluttered background."] * 6
    labels = np.array([0] * 6 + [1] * 6)
    texts = [p.text for p, _ in distinctive_phrases(captions, labels, ["big", "busy"], top=10, min_z=1.0)["big"]]
    assert "white background" in texts and "white" not in texts  # "white" alone is always "white background"
    assert "two large shapes" in texts or "large shapes" in texts
    assert "two large" not in texts  # a fragment ending in an adjective gives way to the phrase it sits in


def test_many_different_animals_share_the_trait_animal_when_no_breed_dominates():
    from describe.differences import propose_from_statistics
    from describe.objects import Presence
    from describe.stages import wordnet_presence
    from transforms.neural.imagenet import imagenet_class_names

    names = imagenet_class_names()
    animals = ["tabby", "golden retriever", "goldfish", "bald eagle", "tree frog", "zebra", "ladybug", "koala",
               "hippopotamus", "king penguin"]
    tools = ["hammer", "screwdriver", "laptop", "padlock", "umbrella", "teapot", "wall clock", "backpack",
             "toaster", "bucket"]
    present = np.zeros((20, len(names)), dtype=bool)
    for i, c in enumerate(animals + tools):
        present[i, names.index(c)] = True
    imagenet = Presence("imagenet", names, present, np.ones(20, dtype=bool))
    levels = wordnet_presence(imagenet)
    labels = np.array([0] * 10 + [1] * 10)
    keys = [f"imagenet:{c}" for c in names] + [f"wordnet:{c}" for c in levels.classes]
    matrix = np.column_stack([present, levels.present])
    ratios = object_ratios(matrix, keys, labels, ["zoo", "shed"])
    top = propose_from_statistics(objects={"zoo": [t for t in ratios["zoo"] if t[2] > 1.96]}, top_k=1)
    assert [h.text for h in top.hypotheses] == ["an animal"]  # no single class is in more than 1 of 10 images


def test_lvis_and_ade20k_names_count_at_their_wordnet_levels_too():
    from describe.hierarchy import broader_names, broader_presence

    assert {"aircraft", "vehicle"} <= set(broader_names("airplane", "lvis"))
    assert {"dog", "animal"} <= set(broader_names("beagle", "lvis")) or "animal" in broader_names("dog", "lvis")
    assert "vehicle" in broader_names("car", "ade20k") and broader_names("airplane") == []  # not an ImageNet name
    present = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    levels, names = broader_presence(present, ["airplane", "bus", "apple"], vocabulary="lvis")
    assert levels[:, names.index("conveyance")].tolist() == [True, True, False]
