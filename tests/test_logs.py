"""The commands' log (`bias.core.logs`): levels, where lines go, the quiet switch, and `log_level` end to end."""

from __future__ import annotations

import logging

import pytest

from bias.core.errors import ConfigError
from bias.core.logs import LEVELS, PACKAGES, configure_logging, parse_level, quiet
from bias.core.progress import progress_bar
from tests.conftest import TINY, paths_override, run_cli


@pytest.fixture
def restore_logging():
    """`configure_logging` changes process-wide state: put the root handlers and the levels back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in PACKAGES}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_levels_are_the_four_names_and_anything_else_is_a_one_line_error():
    assert [parse_level(name) for name in LEVELS] == [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]
    for bad in ("quiet", "INFO", None, 20):
        with pytest.raises(ConfigError, match=r"^log_level: expected one of debug \| info \| warning \| error"):
            parse_level(bad)


def test_info_goes_to_stdout_warnings_to_stderr_as_plain_lines(restore_logging, capsys):
    configure_logging("info")
    logging.getLogger("bias.experiment.run").info("accuracy 70.2%")
    logging.getLogger("memorization.study").warning("note: repaired")
    logging.getLogger("describe.run").debug("hidden at info")
    out, err = capsys.readouterr()
    assert out == "accuracy 70.2%\n" and err == "note: repaired\n"


def test_warning_is_quiet_and_debug_shows_the_projects_debug_lines_only(restore_logging, capsys):
    configure_logging("warning")
    logging.getLogger("bias.experiment.run").info("accuracy 70.2%")
    logging.getLogger("classifiers.x").error("error: a failed row")
    assert capsys.readouterr() == ("", "error: a failed row\n")
    configure_logging("debug")  # configured twice: still one line per message
    logging.getLogger("transforms.x").debug("detail")
    logging.getLogger("some_library").debug("library chatter")
    logging.getLogger("some_library").info("library info")
    assert capsys.readouterr() == ("detail\nlibrary info\n", "")


def _bar_disabled() -> bool:
    with progress_bar(total=3) as bar:
        return bar.disable


def test_progress_bars_are_off_only_when_the_level_is_set_above_info(restore_logging):
    logging.getLogger("bias").setLevel(logging.NOTSET)  # unconfigured (a notebook): bars as before
    assert not quiet() and not _bar_disabled()
    configure_logging("info")
    assert not quiet() and not _bar_disabled()
    configure_logging("warning")
    assert quiet() and _bar_disabled()


def test_log_level_warning_silences_a_command_and_the_default_shows_its_result(two_folders, tmp_path):
    """One tiny run at log_level=warning, then reruns that reuse it (log_level is not part of the run's identity)."""
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=10", "data.val_per_dataset=6",
            f"cache_dir={tmp_path / 'c'}", f"out={tmp_path / 'r'}", *TINY, "recipe.epochs=1"]
    quiet_run = run_cli("classify.py", *args, "log_level=warning")
    assert (tmp_path / "r" / "results.json").exists()
    assert "vs chance" not in quiet_run.stdout and "verdict:" not in quiet_run.stdout
    assert "%|" not in quiet_run.stderr  # no progress bar either
    default = run_cli("classify.py", *args)
    assert "reusing finished run" in default.stdout and "vs chance" in default.stdout
    from_env = run_cli("classify.py", *args, env={"BIAS_LOG_LEVEL": "warning"})
    assert "vs chance" not in from_env.stdout
    overridden = run_cli("classify.py", *args, "log_level=info", env={"BIAS_LOG_LEVEL": "warning"})
    assert "vs chance" in overridden.stdout
    bad = run_cli("classify.py", *args, "log_level=loud", check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: log_level: expected one of")
