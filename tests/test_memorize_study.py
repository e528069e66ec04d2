"""The memorization study: the verdict rule on constructed tables, the config, and the command end to end."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from memorization.report import INTERPOLATION, NOVEL, REPLICATION, decide_verdict, dominates
from memorization.study import (
    CONFIG_DIR,
    NOISE_PROTOCOL,
    StudyConfigError,
    derive_seed,
    noise_scale,
    reference_zoo,
    register_resolvers,
    run_dir_for,
    run_study,
)
from tests.conftest import run_cli

NOISE = ["noise_0.06", "noise_0.12"]
OTHERS = ["average", "gaussian"]
FIGURES = ["min_l2_hist.png", "accuracy_vs_similarity.png", "heatmap.png", "decision_boundaries.png", "tsne.png"]

#: A tiny P-diff study: MNIST-1D with 1,000 signals, a 16-16 MLP, 20 fine-tuning steps, a tiny generator.
TINY = ["task.task_kwargs.num_samples=1000", "task.arch.hidden=[16,16]", "task.recipe.epochs=10", "task.recipe.lr=1e-2",
        "zoo.n_models=20", "num_samples=20", "baselines.num_samples=20", "baselines.average_k=4",
        "plots.boundary_grid=40", "plots.tsne_perplexity=5", "progress=false"]
TINY_PDIFF = ["generator.channels=[8,8]", "generator.ae_steps=30", "generator.ddpm_steps=30",
              "generator.num_timesteps=20", "generator.denoiser_channels=16", "generator.denoiser_depth=1",
              "generator.batch_size=8", "generator.device=cpu"]


def row(quality: float, closeness: float, min_l2: float) -> dict[str, float]:
    return {"quality_mean": quality, "closeness_mean": closeness, "min_l2_median": min_l2}


def table(generated: dict[str, float]) -> dict[str, dict[str, float]]:
    """P-diff-like group means (accuracy, max similarity, min L2) with a chosen generated group."""
    return {"training": row(0.770, 0.97, 0.05), "generated": generated,
            "noise_0.06": row(0.765, 0.92, 0.60), "noise_0.12": row(0.750, 0.85, 1.20),
            "average": row(0.774, 0.87, 0.30), "gaussian": row(0.740, 0.83, 0.90)}


def test_copies_are_replication_by_behaviour_or_by_weights():
    copy = decide_verdict(table(row(0.770, 0.999, 1e-5)), NOISE, OTHERS)
    assert copy["verdict"] == REPLICATION and "noise_0.06" in copy["reason"]
    # behaviourally novel but nearer in weights than the lowest-noise copies: still a replica
    near = decide_verdict(table(row(0.770, 0.80, 0.55)), NOISE, OTHERS)
    assert near["verdict"] == REPLICATION and near["checks"]["min_l2_as_close_as_lowest_noise"]
    assert not near["checks"]["closeness_as_close_as_lowest_noise"]
    # within tol_closeness of the lowest noise counts as as-close
    assert decide_verdict(table(row(0.76, 0.917, 0.9)), NOISE, OTHERS)["verdict"] == REPLICATION


def test_noise_like_or_worse_generators_are_interpolation():
    between = decide_verdict(table(row(0.760, 0.88, 0.9)), NOISE, OTHERS)   # P-diff's published position
    assert between["verdict"] == INTERPOLATION
    assert "noise_0.12" in between["reason"] and between["checks"]["dominates_noise"] == {"noise_0.06": True,
                                                                                         "noise_0.12": False}
    worse = decide_verdict(table(row(0.60, 0.90, 2.0)), NOISE, OTHERS)
    assert worse["verdict"] == INTERPOLATION and set(worse["checks"]["dominated_by"]) == {"noise_0.12", "average",
                                                                                          "gaussian"}
    # dominates both noise levels, but an average baseline that is better on both axes dominates it
    beaten = table(row(0.766, 0.845, 1.3))
    assert decide_verdict(beaten, NOISE, OTHERS)["verdict"] == NOVEL
    beaten["average"] = row(0.780, 0.82, 0.3)
    out = decide_verdict(beaten, NOISE, OTHERS)
    assert out["checks"]["dominates_noise"] == {"noise_0.06": True, "noise_0.12": True}
    assert out["verdict"] == INTERPOLATION and out["checks"]["dominated_by"] == ["average"]


def test_a_group_that_dominates_every_baseline_is_novel():
    out = decide_verdict(table(row(0.790, 0.80, 1.5)), NOISE, OTHERS)
    assert out["verdict"] == NOVEL and out["checks"]["dominated_by"] == []
    # a tie with the high-noise group (within tolerance on both axes) is not domination
    tie = decide_verdict(table(row(0.752, 0.852, 1.5)), NOISE, OTHERS)
    assert tie["verdict"] == INTERPOLATION


def test_dominance_and_inputs_are_checked():
    a, b = row(0.8, 0.8, 1), row(0.7, 0.9, 1)
    assert dominates(a, b, 0, 0) and not dominates(b, a, 0, 0) and not dominates(a, a, 0, 0)
    assert not dominates(row(math.nan, 0.1, 1), b, 0, 0)
    with pytest.raises(KeyError, match="groups \\['average'\\]"):
        decide_verdict({"generated": a, "noise_0.06": b}, ["noise_0.06"], ["average"])
    with pytest.raises(ValueError, match="noise baseline"):
        decide_verdict({"generated": a}, [])


def test_gpt_noise_is_added_in_gpt_normalised_space():
    from memorization.generators import create_generator
    from memorization.generators.nets import Standardizer

    protocol = NOISE_PROTOCOL["gpt"]
    assert protocol.sigmas == (0.05, 0.1) and protocol.space == "normalised"
    gen = create_generator("gpt")
    gen.norm_ = Standardizer(10, "global").fit(torch.randn(50, 10) * 0.25 + 0.1)
    scale = noise_scale(gen, protocol, None)
    assert scale == pytest.approx(float(gen.norm_.std[0])) and 0.2 < scale < 0.3
    assert noise_scale(gen, NOISE_PROTOCOL["pdiff"], None) == 1.0
    assert noise_scale(gen, protocol, 0.5) == 0.5
    with pytest.raises(StudyConfigError, match="noise_scale"):
        noise_scale(create_generator("gpt"), protocol, None)


def test_runs_a_generator_held_out_are_not_part_of_the_reference():
    from types import SimpleNamespace

    from tests.test_memorization_generators import mlp_zoo

    zoo = mlp_zoo(n_runs=4, steps_per_run=3)
    assert reference_zoo(SimpleNamespace(), zoo) is zoo
    held = reference_zoo(SimpleNamespace(train_indices_=torch.tensor([3, 4, 5, 9, 10, 11])), zoo)
    assert torch.equal(held.params, zoo.params[[3, 4, 5, 9, 10, 11]]) and held.meta["run"] == [1, 1, 1, 3, 3, 3]
    assert torch.equal(held.error_masks, zoo.error_masks[[3, 4, 5, 9, 10, 11]])


def compose_cfg(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR.parent), version_base=None):
        return compose("memorize", list(overrides))


def test_config_groups_run_dir_and_early_errors(tmp_path):
    cfg = compose_cfg("task=mnist1d_mlp", "generator=pdiff")
    assert cfg.task.task == "mnist1d" and cfg.generator.name == "pdiff" and cfg.generator.ae_steps == 30000
    names = {"task": "mnist1d_mlp", "generator": "pdiff"}
    a = run_dir_for(cfg, names)
    assert a == run_dir_for(compose_cfg("task=mnist1d_mlp", "generator=pdiff", "progress=false"), names)
    assert a.parts[:3] == ("runs", "memorize", "mnist1d_mlp") and a.name == "seed0" and a.parent.name.startswith("pdiff-")
    assert run_dir_for(compose_cfg("generator.ae_steps=5"), names) != a
    study = compose_cfg("study=gpt_cpu")
    assert study.task.task == "digits" and study.generator.name == "gpt" and study.zoo.checkpoints_per_run == 5
    assert derive_seed(0, "sample") == derive_seed(0, "sample") != derive_seed(1, "sample")
    bad = compose_cfg("zoo.regime=nope", f"out={tmp_path / 'bad'}", f"cache_dir={tmp_path}")
    with pytest.raises(StudyConfigError, match="has no regime 'nope'"):
        run_study(bad)
    with pytest.raises(TypeError, match="bad parameters for generator 'pdiff'"):
        run_study(compose_cfg("+generator.nope=1", f"out={tmp_path / 'bad2'}"))


def test_memorize_command_end_to_end_reuses_the_zoo_and_flags_copies(tmp_path, caplog):
    cache, run1, run2 = tmp_path / "cache", tmp_path / "pdiff", tmp_path / "copy"
    common = [*TINY, f"cache_dir={cache}"]
    first = run_cli("memorize.py", "task=mnist1d_mlp", "generator=pdiff", f"out={run1}", *common, *TINY_PDIFF)
    assert "built zoo" in first.stdout
    for name in [*FIGURES, "metrics.json", "report.md", "samples.safetensors", "config.yaml"]:
        assert (run1 / name).is_file() and (run1 / name).stat().st_size > 0, name
    metrics = json.loads((run1 / "metrics.json").read_text())
    groups = metrics["groups"]
    assert list(groups) == ["training", "generated", "noise_0.06", "noise_0.12", "average", "gaussian"]
    assert groups["generated"]["n"] == 20 and groups["training"]["n"] == 20 and groups["average"]["n"] == 20
    assert all(0 <= g["accuracy_mean"] <= 1 and 0 <= g["max_similarity_mean"] <= 1 for g in groups.values())
    assert groups["training"]["accuracy_mean"] > 0.2  # the tiny zoo learned something (chance 0.1)
    assert groups["noise_0.12"]["min_l2_median"] > groups["noise_0.06"]["min_l2_median"] > 0
    assert metrics["noise"]["sigmas"] == [0.06, 0.12] and metrics["zoo"]["regime"] == "steps"
    verdict = metrics["verdict"]["verdict"]
    assert verdict in (REPLICATION, INTERPOLATION, NOVEL) and f"**Verdict: {verdict}**" in (run1 / "report.md").read_text()
    assert set(metrics["seeds"]["baselines"]) == {"noise_0.06", "noise_0.12", "average", "gaussian"}
    assert len(metrics["picks"]["average"]["indices"]) == 20 and len(metrics["seeds"]["heatmap"]["indices"]) == 64
    samples = load_file(str(run1 / "samples.safetensors"))
    assert set(samples) == {"generated", "noise_0.06", "noise_0.12", "average", "gaussian"}
    assert samples["generated"].shape == (20, 16 * 10 + 10)  # the fine-tuned last layer of the 16-16 MLP
    zoo_file = Path(metrics["zoo"]["path"])
    stamp = zoo_file.stat().st_mtime_ns

    copy = run_cli("memorize.py", "task=mnist1d_mlp", "generator=copy", "zoo.regime=steps",
                   "baselines.copy_control=true", f"out={run2}", *common)
    assert f"reusing zoo {zoo_file}" in copy.stdout and zoo_file.stat().st_mtime_ns == stamp
    cm = json.loads((run2 / "metrics.json").read_text())
    assert cm["verdict"]["verdict"] == REPLICATION and cm["zoo"]["path"] == str(zoo_file)
    assert cm["groups"]["generated"]["min_l2_median"] < 1e-4 and "copy" in cm["groups"]
    assert "**Verdict: replication**" in (run2 / "report.md").read_text()

    args = ["task=mnist1d_mlp", "generator=pdiff", f"out={run1}", *common, *TINY_PDIFF]
    caplog.set_level(logging.INFO, logger="memorization")
    assert run_study(compose_cfg(*args))["verdict"] == metrics["verdict"]  # the finished run is reused
    assert "reusing finished study" in caplog.text
    with pytest.raises(StudyConfigError, match="different configuration"):
        run_study(compose_cfg(*args, "seed=1"))


def test_field_study_uses_chamfer_and_draws_shapes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="memorization")
    out = tmp_path / "fields"
    run_study(compose_cfg("task=fields2d", "generator=hyperdiffusion", f"out={out}", f"cache_dir={tmp_path}",
                          "zoo.n_models=8", "task.n_test_shapes=4", "task.fit.hidden=[16,16]", "task.fit.steps=60",
                          "task.fit.first_steps=200", "task.fit.points_per_step=1024", "generator.chunk_size=64",
                          "generator.d_model=16", "generator.depth=1", "generator.heads=2", "generator.steps=10",
                          "generator.num_timesteps=10", "generator.batch_size=4", "generator.device=cpu",
                          "num_samples=6", "baselines.num_samples=6", "baselines.average_k=3", "fields.points=128",
                          "fields.resolution=48", "plots.shapes=4", "plots.tsne_perplexity=3", "progress=false"))
    assert "regime fields" in caplog.text
    for name in ["min_l2_hist.png", "quality_vs_novelty.png", "heatmap.png", "shapes.png", "tsne.png", "report.md"]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    training = metrics["groups"]["training"]
    assert metrics["kind"] == "fields" and metrics["noise"]["sigmas"] == [0.02, 0.04]
    assert 0 < training["chamfer_novelty_mean"] < 1 and training["n_empty"] < 8
    assert training["closeness_mean"] == pytest.approx(-1.0)  # closeness is relative to training's own Chamfer
    assert "Chamfer novelty" in (out / "report.md").read_text()
