"""The console commands (`bias-classify`, `bias-transform`, `bias-table`, `bias-memorize`, `bias-audit`,
`bias-download`, `bias-describe`)
and the scripts in `scripts/` that call them.

Each is a Hydra app over the packaged configs (`pkg://bias.configs`), so it runs from any
directory, installed or from a checkout; add a folder of your own configs with
`hydra.searchpath=[file:///path/to/configs]` (a `data/mine.yaml` there is then `data=mine`).

Every command checks its composed config against its schema (`VALIDATORS`, pydantic models on
`bias.core.schema`) before any work: a key that no section takes, or a value of the wrong kind, is one
line naming the key and where it was set (`check_overrides` does it for a plain override of an unknown
key, which Hydra would refuse with its own advice).

Errors: a `bias.core.errors.BiasError` (a bad config value, unusable data, a model that is not on
disk) or an OS error about a user's path (a read-only folder, a file where a folder belongs) ends the
command with its one-line message; any other exception is a bug and keeps its traceback. `BIAS_TRACEBACK=1` shows the traceback of a `BiasError` too.

Output: each command logs (`bias.core.logs`) at its config's `log_level` (debug | info | warning | error;
`warning` is quiet; default `$BIAS_LOG_LEVEL` or info): status and result lines on stdout, warnings and
errors on stderr. What a command is asked to print (`print_config=true`) is printed whatever the level.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bias.core.errors import BiasError, ConfigError

CONFIG_PATH = "pkg://bias.configs"


def check_command_line(argv: Sequence[str]) -> None:
    """Mistakes Hydra would silently merge away: repeated dataset names, a model renamed without its group."""
    from bias.data.split import duplicate_keys_in_overrides

    dupes = duplicate_keys_in_overrides(argv)
    if dupes:
        sys.exit(f"error: duplicate dataset names {dupes} in data.paths: every dataset needs its own name")
    names = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("model.name=")]
    if names and not any(a.startswith("model=") for a in argv):
        sys.exit(f"error: model.name={names[-1]} alone keeps the architecture arguments (model.kwargs) of the "
                 f"recipe's model, which belong to another network. Choose the model as a group: "
                 f"model=timm model.name={names[-1]} (timm's defaults; add model.kwargs={{...}}), or one of "
                 "model=resnet18, model=convnext_tiny, model=resnet_cpu, model=convnext_cpu")


#: operating-system errors about a path that the user chose or must fix (permissions, a read-only or full disk, a
#: file where a folder belongs, a link loop): one line naming the path, not a traceback
USER_PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                              errno.ELOOP, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})


def user_path_error(err: BaseException) -> str | None:
    """The one-line message for an `OSError` about a user's path (`USER_PATH_ERRNOS`), else None."""
    if isinstance(err, OSError) and err.errno in USER_PATH_ERRNOS and err.filename:
        return f"{err.filename}: {err.strerror or os.strerror(err.errno)}"
    return None


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """A `BiasError`, or an OS error about a user's path (`user_path_error`), ends the command with one line;
    every other exception keeps its traceback."""
    try:
        yield
    except (BiasError, OSError) as err:
        line = str(err) if isinstance(err, BiasError) else user_path_error(err)
        if line is None or os.environ.get("BIAS_TRACEBACK"):
            raise
        sys.exit(f"error: {line}")


#: each command's config -> the function that checks it against its schema ("module:function")
VALIDATORS = {
    "classify": "bias.experiment.config:validate_classify_config",
    "table": "bias.experiment.config:validate_classify_config",
    "transform": "bias.experiment.config:validate_classify_config",
    "describe": "describe.run:validate_describe_config",
    "memorize": "memorization.config:validate_memorize_config",
    "audit": "memorization.config:validate_audit_config",
    "download": "bias.data.download_config:validate_download_config",
    "uncon_gen": "bias.cli:_validate_uncon_gen",
}


def validate_config(config_name: str, cfg: Any) -> None:
    """The composed config of the command `config_name` against its schema (`VALIDATORS`): one `ConfigError`
    naming every wrong key (an unknown one in any section included) and where it was set."""
    import importlib

    module, _, function = VALIDATORS[config_name].partition(":")
    getattr(importlib.import_module(module), function)(cfg)


def _validate_uncon_gen(cfg: Any) -> None:
    """uncon_gen's schema with classify's data schema (`bias.generation` sits beside `bias.experiment`)."""
    from bias.core.schema import to_plain
    from bias.experiment.config import data_schema
    from bias.generation.config import validate_uncon_gen_config

    validate_uncon_gen_config(cfg, data_schema(to_plain(cfg).get("data")))


#: the flags of a Hydra command line that take a value
_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
#: flags after which the command does not run the config as given (another config, a sweep): no pre-check
_NO_PRECHECK = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--multirun", "-m",
                "--help", "-h", "--hydra-help", "--shell-completion", "-sc", "--version"}


def check_overrides(config_name: str, argv: Sequence[str], config_path: str = CONFIG_PATH) -> None:
    """An override of a key that no config file has (``recipe.epochz=3``) is refused by Hydra with its own advice
    to add it with ``+``; refuse it here instead, with the schema's message (``recipe.epochz: unknown key (did you
    mean recipe.epochs?) [set by the command-line override recipe.epochz=3]``). Composes the config once with
    the Hydra compose API (no run); anything else Hydra refuses is left to Hydra to report."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import DictConfig, open_dict

    if any(a.split("=", 1)[0] in _NO_PRECHECK for a in argv):
        return
    overrides, args = [], iter(argv)
    for arg in args:
        if arg in _HYDRA_FLAGS_WITH_VALUE:
            next(args, None)  # the flag's value
        elif not arg.startswith("-"):
            overrides.append(arg)
    given = list(overrides)
    init = (initialize_config_module(config_path.removeprefix("pkg://"), version_base=None)
            if config_path.startswith("pkg://") else initialize_config_dir(config_path, version_base=None))
    with init:
        for _ in range(len(overrides) + 1):
            try:
                cfg = compose(config_name, overrides, return_hydra_config=True)
                break
            except HydraException as err:
                cause = f"{err} {err.__cause__ or ''}"
                bad = next((i for i, o in enumerate(overrides) if not o.startswith(("+", "~"))
                            and f"Could not override '{o.split('=', 1)[0]}'" in cause and "not in struct" in cause),
                           None)
                if bad is None:
                    return  # Hydra's own message says what is wrong
                overrides[bad] = "+" + overrides[bad]
        else:
            return
    if overrides == given or not isinstance(cfg, DictConfig):
        return
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = given  # where a key was set: the override as the user wrote it
    validate_config(config_name, cfg)
    added = next(o for o, g in zip(overrides, given) if o != g)  # a key the schema knows but no config file sets
    raise ConfigError(f"{added[1:].split('=', 1)[0]}: not in the config files; add it with {added}")


def _hydra_app(config_name: str, body: Callable[[Any], None], config_path: str = CONFIG_PATH) -> Callable[[], None]:
    """A Hydra main over the packaged configs (or the folder `config_path`) that runs `body(cfg)` with `fail_cleanly`,
    after the config is checked against its schema (`validate_config`)."""

    def command() -> None:
        import hydra

        from bias.core.distributed import configure_threads, shutdown_distributed
        from bias.core.logs import configure_logging

        @hydra.main(config_path=config_path, config_name=config_name, version_base=None)
        def main(cfg: Any) -> None:
            with fail_cleanly():
                configure_logging(cfg.get("log_level", "info"))
                threads = cfg.get("threads")
                if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
                    raise ConfigError(f"threads: expected a positive integer or null, got {threads!r}")
                configure_threads(threads)
                validate_config(config_name, cfg)
                body(cfg)
            shutdown_distributed()

        check_command_line(sys.argv[1:])
        with fail_cleanly():
            check_overrides(config_name, sys.argv[1:], config_path)
        main()

    return command


def _classify(cfg: Any, callbacks: Sequence[Callable[[int], None]] = ()) -> None:
    from omegaconf import OmegaConf

    from bias.experiment.run import run_classification

    if cfg.print_config:  # asked for: printed at any log level (as in every command below)
        print(OmegaConf.to_yaml(cfg))
    run_classification(cfg, callbacks=callbacks)


def classify(callbacks: Sequence[Callable[[int], None]] = ()) -> None:
    """`bias-classify`: one dataset-classification run (`scripts/classify.py`); `callbacks` run after every epoch."""
    _hydra_app("classify", lambda cfg: _classify(cfg, callbacks))()


def _transform(cfg: Any) -> None:
    from bias.experiment.run import precompute_for_config

    precompute_for_config(cfg)


def _table(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from bias.experiment.table import run_table

    run_table(cfg, list(HydraConfig.get().overrides.task))


def _memorize(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from memorization.study import run_study

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    run_study(cfg, dict(HydraConfig.get().runtime.choices))


def _audit(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from memorization.audit.run import run_audit

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    run_audit(cfg)


def audit() -> None:
    """`bias-audit`: the memorization audit of your own checkpoints (`scripts/audit.py`).

    Its configs live in their own folder, configs/audit/ (groups model/ and task/ there, apart from the
    classifier's model/ group)."""
    from bias.configs import CONFIG_DIR

    _hydra_app("audit", _audit, str(CONFIG_DIR / "audit"))()


def _download(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from bias.data.download import download_from_config

    download_from_config(OmegaConf.to_container(cfg, resolve=True))


def memorize() -> None:
    """`bias-memorize`: the memorization study (`scripts/memorize.py`)."""
    from memorization.study import register_resolvers

    register_resolvers()
    _hydra_app("memorize", _memorize)()


def _uncon_gen(cfg: Any, callbacks: Sequence[Callable[[str, int], None]] = ()) -> None:
    from omegaconf import OmegaConf

    from bias.generation.uncon_gen import run_uncon_gen

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    run_uncon_gen(cfg, callbacks=callbacks)


def uncon_gen(callbacks: Sequence[Callable[[str, int], None]] = ()) -> None:
    """`scripts/uncon_gen.py`: train and sample one DiT per dataset; `callbacks(dataset, step)` run after each checkpoint."""
    _hydra_app("uncon_gen", lambda cfg: _uncon_gen(cfg, callbacks))()


def _describe(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from describe.run import run_describe

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    run_describe(cfg)


transform = _hydra_app("transform", _transform)   # `bias-transform`: fill a precomputed transform's cache
table = _hydra_app("table", _table)               # `bias-table`: the bias table
download = _hydra_app("download", _download)      # `bias-download`: seeded URL sample + img2dataset
describe = _hydra_app("describe", _describe)      # `bias-describe`: the natural-language dataset report


COMMANDS = {"classify": classify, "transform": transform, "table": table, "memorize": memorize, "audit": audit,
            "download": download, "describe": describe}


def main() -> None:
    """`python -m bias.cli <command> [overrides]`: the console commands without installed entry points."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m bias.cli {{{','.join(COMMANDS)}}} [hydra overrides]")
    command = COMMANDS[sys.argv.pop(1)]
    command()


if __name__ == "__main__":
    main()
