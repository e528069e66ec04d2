"""G.pt (Peebles et al. 2022): a diffusion transformer over parameters, conditioned on a starting
checkpoint, its loss and a target loss.

Training pairs ``(start, target)``:

* ``pairs="trajectory"`` (zoos with several checkpoints per run, ``meta["run"]`` / ``["step"]``):
  two checkpoints of the same run, any order (the model also learns to raise the loss when asked).
* ``pairs="cross_run"``, the fallback for zoos holding one checkpoint per run: start and target are
  two different models. The generator then learns to map a trained model to another one of a
  given loss; sampling starts from held-out *trained* models, not from initialisations, so it is
  not the published protocol (which needs checkpoints along training).
* ``pairs="auto"`` (default): trajectory when some run has two or more checkpoints, else cross_run.

A seeded ``holdout_fraction`` of runs (at least one) is never trained on. Sampling starts from
their earliest checkpoints (step 0 in a zoo that stores initialisations: held-out inits, as
published), with their recorded loss, and target loss ``target_loss`` (0, as published). Use
`sample_from` for explicit starting points.

Parameters are tokenised per tensor (each layer's weight and bias cut into chunks of
``chunk_size``), the noisy target and the start get their own per-token linear embeddings, the
timestep and the two losses one token each; a pre-norm transformer predicts the clean target
(``prediction="x0"``, as G.pt) under a DDPM with linear betas and 1000 steps. MLP zoos are
augmented with random hidden-unit permutations, the same one for start and target of a pair.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memorization.generators.base import WeightGenerator, cpu_generator, register_generator
from memorization.generators.nets import (
    GaussianDiffusion,
    ParamTokenizer,
    PerTokenLinear,
    ScalarEmbedding,
    Standardizer,
    TokenTransformer,
    device_generator,
    fit_generators,
    seeded_modules,
    train_loop,
)
from memorization.generators.permutation import mlp_layers, permute_mlp, random_permute_mlp
from memorization.zoo.store import ParamSpec, Zoo

PAIR_MODES = ("auto", "trajectory", "cross_run")


class LossConditionedTransformer(nn.Module):
    """``model(x_t, t, (start, start_loss, target_loss))`` on normalised flat params ``(B, P)``."""

    def __init__(self, spec: ParamSpec, chunk_size: int, d_model: int, depth: int, heads: int, dropout: float,
                 loss_scale: float) -> None:
        super().__init__()
        self.tokens = ParamTokenizer(spec, chunk_size)
        T = self.tokens.num_tokens
        self.net = TokenTransformer(T, chunk_size, num_prefix=3 + T, d_model=d_model, depth=depth, heads=heads,
                                    dropout=dropout)
        self.start_embed = PerTokenLinear(T, chunk_size, d_model)
        self.time = ScalarEmbedding(d_model)
        self.start_loss = ScalarEmbedding(d_model, scale=loss_scale)
        self.target_loss = ScalarEmbedding(d_model, scale=loss_scale)

    def forward(self, x: Tensor, t: Tensor, cond: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        start, start_loss, target_loss = cond
        scalars = torch.stack([self.time(t), self.start_loss(start_loss), self.target_loss(target_loss)], dim=1)
        prefix = torch.cat([scalars, self.start_embed(self.tokens.tokenize(start))], dim=1)
        return self.tokens.detokenize(self.net(self.tokens.tokenize(x), prefix))


@register_generator("gpt")
class GPt(WeightGenerator):
    default_num_samples = 128

    def __init__(self, chunk_size: int = 64, d_model: int = 256, depth: int = 6, heads: int = 8, dropout: float = 0.0,
                 num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2, prediction: str = "x0",
                 steps: int = 50000, lr: float = 2e-4, weight_decay: float = 0.0, batch_size: int = 256,
                 permutation_augment: bool = True, pairs: str = "auto", holdout_fraction: float = 0.1,
                 target_loss: float = 0.0, normalize: str = "global", progress: bool = True, device: str = "auto") -> None:
        super().__init__(device)
        if pairs not in PAIR_MODES:
            raise ValueError(f"gpt: pairs must be one of {PAIR_MODES}, got {pairs!r}")
        if not 0 <= holdout_fraction < 1:
            raise ValueError(f"gpt: holdout_fraction must be in [0, 1), got {holdout_fraction}")
        self.chunk_size, self.d_model, self.depth, self.heads = int(chunk_size), int(d_model), int(depth), int(heads)
        self.dropout, self.num_timesteps, self.beta_start, self.beta_end = float(dropout), int(num_timesteps), beta_start, beta_end
        self.prediction, self.steps, self.lr, self.weight_decay = prediction, int(steps), float(lr), float(weight_decay)
        self.batch_size, self.permutation_augment, self.pairs = int(batch_size), bool(permutation_augment), pairs
        self.holdout_fraction, self.target_loss, self.normalize = float(holdout_fraction), float(target_loss), normalize
        self.progress = progress

    # -- data --------------------------------------------------------------------------------
    def _split(self, zoo: Zoo, seed: int) -> None:
        for col in ("run", "step", "loss"):
            if col not in zoo.meta:
                raise KeyError(f"gpt needs zoo.meta[{col!r}] (run id, training step and loss of every checkpoint)")
        runs = list(zoo.meta["run"])
        unique = sorted(set(runs), key=str)
        if len(unique) < 2:
            raise ValueError("gpt needs checkpoints from at least two runs (one is held out for sampling starts)")
        counts = {r: runs.count(r) for r in unique}
        mode = self.pairs
        if mode == "auto":
            mode = "trajectory" if max(counts.values()) >= 2 else "cross_run"
        n_hold = max(1, round(self.holdout_fraction * len(unique)))
        order = torch.randperm(len(unique), generator=cpu_generator(seed)).tolist()
        held = {unique[i] for i in order[:n_hold]}
        train_idx = [i for i, r in enumerate(runs) if r not in held]
        if mode == "trajectory" and all(counts[r] < 2 for r in unique if r not in held):
            raise ValueError("gpt pairs='trajectory' needs training runs with two or more checkpoints; "
                             "use pairs='cross_run' for zoos of final checkpoints")
        if len(train_idx) < 2:
            raise ValueError("gpt: fewer than two training checkpoints remain after the hold-out; lower holdout_fraction")
        steps = list(zoo.meta["step"])
        starts = []
        for r in sorted(held, key=str):
            members = [i for i, rr in enumerate(runs) if rr == r]
            starts.append(min(members, key=lambda i: steps[i]))
        train_runs = [runs[i] for i in train_idx]
        if mode == "trajectory":
            groups = {r: [j for j, rr in enumerate(train_runs) if rr == r] for r in set(train_runs)}
            partners = [groups[r] for r in train_runs]
        else:
            everyone = list(range(len(train_idx)))
            partners = [everyone[:j] + everyone[j + 1:] for j in everyone]
        width = max(len(p) for p in partners)
        self.mode_ = mode
        self.train_indices_ = torch.tensor(train_idx)
        self.start_indices_ = torch.tensor(starts)
        self._partners = torch.tensor([p + [p[0]] * (width - len(p)) for p in partners])
        self._partner_counts = torch.tensor([len(p) for p in partners])

    def _draw_pairs(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Positions (into the training rows) of a batch of (start, target) pairs."""
        n = len(self.train_indices_)
        a = torch.randint(0, n, (self.batch_size,), generator=g)
        k = (torch.rand(self.batch_size, generator=g) * self._partner_counts[a]).long()
        return a, self._partners[a, k]

    # -- fit / sample ------------------------------------------------------------------------
    def _fit(self, zoo: Zoo, seed: int) -> None:
        if self.permutation_augment:
            try:
                mlp_layers(zoo.spec)
            except ValueError as err:
                raise ValueError(f"gpt: permutation_augment needs an MLP zoo ({err}); set permutation_augment=false") from err
        self._split(zoo, seed)
        dev = self.torch_device
        params = zoo.params.float()
        losses = torch.as_tensor(zoo.meta["loss"], dtype=torch.float32)
        if not torch.isfinite(losses).all():
            raise ValueError("gpt: zoo.meta['loss'] has non-finite values; drop those checkpoints")
        loss_scale = 1000.0 / max(float(losses.abs().max()), 1e-8)
        self.norm_, self.model_, self.diffusion_ = seeded_modules(
            seed, dev, lambda: Standardizer(zoo.spec.numel(), self.normalize).fit(params[self.train_indices_]),
            lambda: LossConditionedTransformer(zoo.spec, self.chunk_size, self.d_model, self.depth, self.heads,
                                               self.dropout, loss_scale),
            lambda: GaussianDiffusion(self.num_timesteps, self.beta_start, self.beta_end, self.prediction))
        self._spec = zoo.spec
        train = params[self.train_indices_].to(dev)
        train_loss = losses[self.train_indices_].to(dev)
        self.start_params_ = params[self.start_indices_].clone()
        self.start_losses_ = losses[self.start_indices_].clone()
        idx_gen, noise_gen = fit_generators(seed, dev)

        def loss(step: int) -> Tensor:
            a, b = (i.to(dev) for i in self._draw_pairs(idx_gen))
            start, target = train[a], train[b]
            if self.permutation_augment:  # one permutation per pair, applied to start and target alike
                start, perms = random_permute_mlp(start, zoo.spec, noise_gen)
                target = permute_mlp(target, zoo.spec, perms)
            cond = (self.norm_(start), train_loss[a], train_loss[b])
            return self.diffusion_.training_loss(self.model_, self.norm_(target), cond, generator=noise_gen)

        self.history_ = train_loop(self.model_, loss, self.steps, lr=self.lr, weight_decay=self.weight_decay,
                                   desc="G.pt diffusion transformer", progress=self.progress)

    def sample_from(self, start_params: Tensor, start_loss: Tensor, seed: int = 0,
                    target_loss: float | None = None) -> Tensor:
        """Generate one sample per starting point ``(n, P)`` with losses ``(n,)``; target loss default ``self.target_loss``."""
        dev = self.torch_device
        n = start_params.shape[0]
        target = self.target_loss if target_loss is None else float(target_loss)
        cond = (self.norm_(start_params.to(dev, torch.float32)), start_loss.to(dev, torch.float32).reshape(n),
                torch.full((n,), target, device=dev))
        with torch.no_grad():
            x = self.diffusion_.sample(self.model_, (n, start_params.shape[1]), cond, device=dev,
                                       generator=device_generator(seed, dev), progress=self.progress, desc="G.pt sampling")
            return self.norm_.inverse(x).cpu()

    def _sample(self, n: int, seed: int) -> Tensor:
        which = torch.arange(n) % len(self.start_indices_)
        self.last_sample = {"start_indices": self.start_indices_[which].tolist(), "target_loss": self.target_loss,
                            "mode": self.mode_}
        return self.sample_from(self.start_params_[which], self.start_losses_[which], seed)
