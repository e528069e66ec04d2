"""Generative models of network weights, and the baselines they are compared with, by name.

    from memorization.generators import create_generator, list_generators
    gen = create_generator("noise", sigma=0.04).fit(zoo, seed=0)
    samples = gen.sample(100, seed=1)        # (100, P), zoo.spec order
    novelty_reference = gen.reference_params(zoo)

``list_generators()``: average, copy, gaussian, gpt, hyperdiffusion, hyperreps, noise, pdiff. Every
generator's parameters and published values are in ``configs/memorize/generator/<name>.yaml``.
"""

from memorization.generators.base import (
    NotFittedError,
    UnknownGeneratorError,
    WeightGenerator,
    create_generator,
    get_generator_class,
    list_generators,
    register_generator,
)

__all__ = ["NotFittedError", "UnknownGeneratorError", "WeightGenerator", "create_generator", "get_generator_class",
           "list_generators", "register_generator"]

# the built-in generators register themselves on import
from memorization.generators import baselines, gpt, hyperdiffusion, hyperreps, pdiff  # noqa: E402, F401, I001
