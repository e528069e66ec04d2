"""Model zoos: tasks, small architectures, vectorised training of many seeded models, storage.

    from memorization.zoo import build_zoo, Zoo, get_task
    zoo = build_zoo(task="mnist1d", arch={"name": "mlp", "hidden": [32]}, regime="runs",
                    n_models=100, seed=0, out="cache/zoos/mnist1d_mlp.safetensors")
    acc, masks = zoo.evaluate(zoo.params)       # batched (vmap) evaluation of any parameter vectors

See `memorization.zoo.store` for the file format and flatten order, `memorization.zoo.training`
for the two regimes.
"""

from memorization.zoo.store import ParamSpec, Zoo, ZooFileError, config_hash

__all__ = ["ParamSpec", "Zoo", "ZooFileError", "config_hash", "build_zoo", "get_task", "list_tasks", "build_arch",
           "load_zoo_config"]


def __getattr__(name: str):
    if name in ("build_zoo", "load_zoo_config"):
        from memorization.zoo import build

        return getattr(build, name)
    if name in ("get_task", "list_tasks"):
        from memorization.zoo import tasks

        return getattr(tasks, name)
    if name == "build_arch":
        from memorization.zoo.archs import build_arch

        return build_arch
    raise AttributeError(f"module 'memorization.zoo' has no attribute {name!r}")
