"""Generated images: the `uncon_gen` study (one unconditional DiT per dataset, sampled; the samples are classified).

`latents` (VAE encoding through the batched runner, memory-mapped latents), `diffusion` (schedule, DiT,
hybrid loss, DDPM sampling), `train` (the accelerate training loop, checkpointed and resumable), `options`
(checked training and sampling options), `uncon_gen` (the study: config in, sample folders out).
"""
