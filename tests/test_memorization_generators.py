"""Weight generators: registry, configs, every generator at tiny size, and known answers for the baselines."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from memorization.generators import UnknownGeneratorError, create_generator, get_generator_class, list_generators
from memorization.generators.nets import GaussianDiffusion, ParamTokenizer
from memorization.generators.permutation import permute_mlp, random_permute_mlp
from memorization.metrics import min_l2
from memorization.zoo.archs import build_arch
from memorization.zoo.functional import batched_logits
from memorization.zoo.store import ParamSpec, Zoo

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "memorize" / "generator"
NAMES = ["average", "copy", "gaussian", "gpt", "hyperdiffusion", "hyperreps", "noise", "pdiff"]


def mlp_zoo(n_runs: int = 6, steps_per_run: int = 4, hidden: int = 8, seed: int = 0) -> Zoo:
    """A real Zoo of a 4-8-3 MLP: runs of checkpoints drifting from a seeded init (no training needed)."""
    g = torch.Generator().manual_seed(seed)
    spec = ParamSpec(["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"],
                     [(hidden, 4), (hidden,), (3, hidden), (3,)])
    P = spec.numel()
    params, meta = [], {k: [] for k in ("model_id", "run", "seed", "step", "accuracy", "loss", "regime")}
    for r in range(n_runs):
        p = torch.randn(P, generator=g) * 0.5
        for s in range(steps_per_run):
            params.append(p.clone())
            p = p + 0.05 * torch.randn(P, generator=g)
            meta["model_id"].append(len(params) - 1)
            meta["run"].append(r)
            meta["seed"].append(r)
            meta["step"].append(s)
            meta["loss"].append(2.0 / (1 + s) + 0.01 * r)
            meta["accuracy"].append(0.5 + 0.1 * s + 0.001 * r)
            meta["regime"].append("runs")
    n = len(params)
    return Zoo("toy", {"name": "mlp", "hidden": [hidden]}, spec, torch.stack(params), meta,
               torch.rand(n, 20, generator=g) < 0.3)


TINY = {
    "copy": {}, "noise": {"sigma": 0.05}, "average": {"k": 4}, "gaussian": {},
    "pdiff": dict(channels=[8, 8], latent_channels=2, ae_steps=30, ddpm_steps=30, num_timesteps=20,
                  denoiser_channels=16, denoiser_depth=1, batch_size=8, device="cpu", progress=False),
    "hyperreps": dict(hidden=[32], latent_dim=8, steps=30, batch_size=8, device="cpu", progress=False),
    "gpt": dict(chunk_size=8, d_model=32, depth=1, heads=2, steps=20, num_timesteps=20, batch_size=8,
                device="cpu", progress=False),
    "hyperdiffusion": dict(chunk_size=8, d_model=32, depth=1, heads=2, steps=20, num_timesteps=20, batch_size=8,
                           device="cpu", progress=False),
}


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return mlp_zoo()


def test_registry_lists_every_generator_and_explains_unknown_names():
    assert list_generators() == NAMES
    with pytest.raises(UnknownGeneratorError, match="available: average, copy"):
        create_generator("nope")
    with pytest.raises(TypeError, match="bad parameters for generator 'noise'"):
        create_generator("noise", sigmaa=1.0)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_lists_every_parameter_with_the_class_default(name):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    sig = inspect.signature(get_generator_class(name).__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    assert set(cfg) == set(defaults)
    for key, value in cfg.items():
        default = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
        assert value == default, f"{name}.{key}: yaml {value!r} != class default {default!r}"
    create_generator(name, **yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))  # the YAML builds


@pytest.mark.parametrize("name", NAMES)
def test_every_generator_fits_and_samples_reproducibly_without_touching_the_zoo(name, zoo):
    before = zoo.params.clone()
    gen = create_generator(name, **TINY[name]).fit(zoo, seed=0)
    a, b, c = gen.sample(5, seed=1), gen.sample(5, seed=1), gen.sample(5, seed=2)
    assert a.shape == (5, zoo.spec.numel()) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(zoo.params, before)
    assert gen.sample(None).shape[0] == type(gen).default_num_samples
    assert gen.reference_params(zoo).shape == zoo.params.shape


def test_sample_before_fit_and_empty_zoo_fail_clearly(zoo):
    with pytest.raises(RuntimeError, match="call fit"):
        create_generator("copy").sample(3)
    with pytest.raises(ValueError, match="empty"):
        create_generator("copy").fit(zoo.subset([]))


def test_copy_sits_on_the_training_set(zoo):
    gen = create_generator("copy", noise_std=1e-6).fit(zoo)
    samples = gen.sample(50, seed=3)
    dist, nearest = min_l2(samples, zoo.params)
    assert dist.max() < 1e-4  # ~ 1e-6 * sqrt(67)
    assert nearest.tolist() == gen.last_sample["indices"]


def test_noise_min_l2_matches_sigma_sqrt_p_and_grows_with_sigma(zoo):
    P = zoo.spec.numel()
    means = []
    for sigma in (0.001, 0.01, 0.1):
        gen = create_generator("noise", sigma=sigma).fit(zoo)
        means.append(float(min_l2(gen.sample(200, seed=0), zoo.params)[0].mean()))
    assert means[0] < means[1] < means[2]
    # small sigma: the nearest training model is the source, at distance ~ sigma * sqrt(P)
    assert means[0] == pytest.approx(0.001 * P ** 0.5, rel=0.1)
    scaled = create_generator("noise", sigma=0.01, scale=0.1).fit(zoo).sample(200)
    assert float(min_l2(scaled, zoo.params)[0].mean()) == pytest.approx(means[0], rel=0.1)


def test_average_is_the_mean_of_the_recorded_distinct_checkpoints_and_leaves_the_zoo_alone(zoo):
    before = zoo.params.clone()
    gen = create_generator("average", k=5).fit(zoo, seed=0)
    samples = gen.sample(30, seed=7)
    assert torch.equal(zoo.params, before)
    idx = torch.tensor(gen.last_sample["indices"])
    assert idx.shape == (30, 5)
    assert all(len(set(row)) == 5 for row in idx.tolist())
    torch.testing.assert_close(samples, before[idx].mean(1))
    gen.sample(30, seed=7)
    assert gen.last_sample["indices"] == idx.tolist()  # seeded: the same choice again
    assert gen._train.data_ptr() != zoo.params.data_ptr()  # a private copy, never a view of the zoo
    with pytest.raises(ValueError, match="lower k"):
        create_generator("average", k=1000).fit(zoo).sample(2)


def test_gaussian_matches_per_coordinate_mean_and_std():
    g = torch.Generator().manual_seed(0)
    base = mlp_zoo(n_runs=50, steps_per_run=1)
    mu, sd = torch.linspace(-1, 1, base.spec.numel()), torch.linspace(0.1, 0.5, base.spec.numel())
    base.params = mu + sd * torch.randn(len(base), base.spec.numel(), generator=g)
    gen = create_generator("gaussian").fit(base)
    torch.testing.assert_close(gen.mean_, base.params.mean(0))
    torch.testing.assert_close(gen.std_, base.params.std(0, correction=0))
    s = gen.sample(20000, seed=1)
    assert (s.mean(0) - gen.mean_).abs().max() < 5 * gen.std_.max() / 20000 ** 0.5
    assert ((s.std(0) / gen.std_) - 1).abs().max() < 0.05


def test_pdiff_stores_per_coordinate_normalisation(zoo):
    gen = create_generator("pdiff", **TINY["pdiff"]).fit(zoo)
    torch.testing.assert_close(gen.norm_.mean, zoo.params.mean(0))
    torch.testing.assert_close(gen.norm_.std, zoo.params.std(0, correction=0))
    assert gen.ae_.latent_shape == (2, 17)  # 67 padded to 68, halved twice
    assert len(gen.ae_history_) == 30 and len(gen.ddpm_history_) == 30


def test_hyperreps_top_models_reference_and_the_shared_state_copier(zoo):
    kw = {**TINY["hyperreps"], "steps": 100}
    per_dim = create_generator("hyperreps", **kw).fit(zoo, seed=0)
    k = round(0.3 * len(zoo))
    assert sorted(per_dim.top_indices_.tolist()) == sorted(torch.argsort(zoo.accuracy, descending=True)[:k].tolist())
    recon = per_dim.reference_params(zoo)
    assert recon.shape == zoo.params.shape and not torch.allclose(recon, zoo.params)
    torch.testing.assert_close(recon, per_dim.decode(per_dim.encode(zoo.params)))
    shared = create_generator("hyperreps", **kw, sampler="shared_random_state").fit(zoo, seed=0)
    top_recon = recon[shared.top_indices_]
    d_shared = min_l2(shared.sample(40, seed=1), top_recon)[0]
    d_indep = min_l2(per_dim.sample(40, seed=1), top_recon)[0]
    # shared state: one training latent + one scalar offset -> the reconstruction of that model
    assert d_shared.max() < 0.01 * d_indep.mean()
    with pytest.raises(KeyError, match="accuracy"):
        create_generator("hyperreps", **kw).fit(Zoo(zoo.task, zoo.arch, zoo.spec, zoo.params,
                                                     {"model_id": zoo.meta["model_id"]}, zoo.error_masks))


def test_gpt_holds_out_runs_and_starts_from_their_first_checkpoints(zoo):
    gen = create_generator("gpt", **TINY["gpt"], holdout_fraction=0.34).fit(zoo, seed=0)
    assert gen.mode_ == "trajectory"
    held_runs = {zoo.meta["run"][i] for i in gen.start_indices_.tolist()}
    assert len(held_runs) == 2
    assert all(zoo.meta["step"][i] == 0 for i in gen.start_indices_.tolist())
    assert not {zoo.meta["run"][i] for i in gen.train_indices_.tolist()} & held_runs
    gen.sample(4, seed=0)
    assert gen.last_sample["target_loss"] == 0.0 and len(gen.last_sample["start_indices"]) == 4
    finals = zoo.subset([i for i, s in enumerate(zoo.meta["step"]) if s == 3])
    fallback = create_generator("gpt", **TINY["gpt"]).fit(finals)
    assert fallback.mode_ == "cross_run" and torch.isfinite(fallback.sample(3)).all()
    with pytest.raises(ValueError, match="trajectory"):
        create_generator("gpt", **TINY["gpt"], pairs="trajectory").fit(finals)


def test_gpt_permutation_augmentation_needs_an_mlp(zoo):
    conv = ParamSpec(["conv.weight", "conv.bias"], [(2, 1, 3, 3), (2,)])
    conv_zoo = Zoo("toy", {}, conv, torch.randn(6, 20), {"run": [0, 0, 1, 1, 2, 2], "step": [0, 1] * 3,
                   "loss": [1.0] * 6}, torch.zeros(6, 0, dtype=torch.bool))
    with pytest.raises(ValueError, match="permutation_augment=false"):
        create_generator("gpt", **TINY["gpt"]).fit(conv_zoo)
    ok = create_generator("gpt", **TINY["gpt"], permutation_augment=False).fit(conv_zoo)
    assert ok.sample(2).shape == (2, 20)


def test_permutation_augmentation_preserves_the_function():
    model = build_arch({"name": "mlp", "hidden": [16, 12]}, (5,), 3)
    spec = ParamSpec.from_module(model)
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(4, spec.numel(), generator=g)
    x = torch.randn(32, 5, generator=g)
    permuted, perms = random_permute_mlp(flat, spec, g)
    assert not torch.allclose(permuted, flat)
    assert [p.shape for p in perms] == [(4, 16), (4, 12)]
    torch.testing.assert_close(batched_logits(model, spec, permuted, x), batched_logits(model, spec, flat, x))
    inverse = [p.argsort(1) for p in perms]
    torch.testing.assert_close(permute_mlp(permuted, spec, inverse), flat)


def test_tokenizer_round_trip_keeps_layers_apart():
    spec = ParamSpec(["a", "b"], [(3, 5), (4,)])
    tok = ParamTokenizer(spec, 4)
    flat = torch.arange(19.0)[None] + 1
    tokens = tok.tokenize(flat)
    assert tokens.shape == (1, 5, 4)  # 15 weights -> 4 tokens (last padded), 4 biases -> 1 token
    assert tokens[0, 3].tolist() == [13, 14, 15, 0] and tokens[0, 4].tolist() == [16, 17, 18, 19]
    torch.testing.assert_close(tok.detokenize(tokens), flat)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_ddpm_sampler_with_the_exact_denoiser_recovers_a_gaussian(prediction):
    """Data N(mu, s^2): E[x0 | x_t] is known in closed form, so sampling must return N(mu, s^2)."""
    mu, s = 2.0, 0.5
    diff = GaussianDiffusion(1000, prediction=prediction)

    def oracle(x, t, cond=None):
        abar = diff.sqrt_abar[t][:, None] ** 2
        x0 = mu + abar.sqrt() * s**2 * (x - abar.sqrt() * mu) / (abar * s**2 + 1 - abar)
        return x0 if prediction == "x0" else (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    out = diff.sample(oracle, (4000, 1), device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      progress=False)
    assert float(out.mean()) == pytest.approx(mu, abs=0.03)
    assert float(out.std()) == pytest.approx(s, rel=0.05)


def test_hyperdiffusion_permutation_copies(zoo):
    gen = create_generator("hyperdiffusion", **{**TINY["hyperdiffusion"], "denoiser": "mlp", "mlp_hidden": 16,
                                                "mlp_depth": 1, "permutation_augment": 3}).fit(zoo)
    assert torch.isfinite(gen.sample(3)).all()


def test_diffusion_generator_learns_a_two_point_training_set():
    """Trained on two repeated weight vectors, a DDPM must sample near them, and from both."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(2, 8, generator=g)
    zoo = Zoo("toy", {}, ParamSpec(["w"], [(8,)]), centers.repeat(10, 1), {"model_id": list(range(20))},
              torch.zeros(20, 0, dtype=torch.bool))
    gen = create_generator("hyperdiffusion", denoiser="mlp", mlp_hidden=64, mlp_depth=2, steps=800, lr=2e-3,
                           num_timesteps=100, batch_size=20, normalize="coordinate", device="cpu", progress=False)
    samples = gen.fit(zoo).sample(200, seed=0)
    dist, nearest = min_l2(samples, centers)
    separation = float((centers[0] - centers[1]).norm())
    assert float(dist.median()) < 0.05 * separation
    assert float(dist.quantile(0.9)) < 0.15 * separation
    assert 0.25 < float(nearest.float().mean()) < 0.75


def test_hyperdiffusion_samples_stay_at_the_scale_of_a_field_zoo():
    """An under-trained eps-denoiser over a 1,000-step chain: without the x0 clamp the samples' norms blow up
    (the CPU-scale study saw 250-2,500 against ~12); with it (the default) they stay near the training norm."""
    from memorization.fields import FieldFitConfig, build_field_zoo

    zoo = build_field_zoo(6, dim=2, seed=0, progress=False,
                          cfg=FieldFitConfig(hidden=[16, 16], n_frequencies=2, points_per_step=1024, lr=3e-3,
                                             steps=40, first_steps=150))
    train_norm = float(zoo.params.norm(dim=1).median())
    kw = dict(chunk_size=32, d_model=32, depth=1, heads=2, steps=60, lr=1e-3, batch_size=6, num_timesteps=1000,
              device="cpu", progress=False)
    gen = create_generator("hyperdiffusion", **kw).fit(zoo, seed=0)
    assert gen.clip_x0
    norms = gen.sample(16, seed=1).norm(dim=1)
    assert float(norms.max()) < 1.5 * train_norm
    gen.clip_x0 = False
    assert float(gen.sample(16, seed=1).norm(dim=1).median()) > 5 * train_norm
