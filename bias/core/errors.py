"""The project's errors. A `BiasError` is a mistake the user can fix (a bad config value, unusable
data, a model that is not on disk): the command line prints its message as one line. Every other
exception is a bug and keeps its traceback."""

from __future__ import annotations


class BiasError(Exception):
    """Base of the errors whose message alone tells the user what to do."""

    def __str__(self) -> str:  # KeyError subclasses would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class ConfigError(BiasError, ValueError):
    """A configuration value is wrong; the message names the key (`recipe.epochs: expected ...`)."""


class DataError(BiasError, ValueError):
    """The data cannot be used as configured (missing folder, too few images, ...)."""


class MissingModelError(BiasError, FileNotFoundError):
    """Model weights are not where they should be; the message says what to download and where to put it."""


class TrainingDiverged(BiasError, ArithmeticError):
    """A loss or a network output became nan or infinite: the run stopped and is recorded as failed.

    `what` says which value (`loss`, `val outputs`), `epoch` (1-based) and `step` (optimizer steps so far) where.
    """

    def __init__(self, what: str, value: float, epoch: int, step: int, recorded: str = "") -> None:
        self.what, self.value, self.epoch, self.step = what, value, epoch, step
        super().__init__(f"training diverged: non-finite {what} ({value}) at epoch {epoch}, step {step}"
                         + (f"; {recorded}" if recorded else "") + "; run again with a lower learning rate "
                         "(recipe.lr=<smaller>) or clipped gradients (recipe.clip_grad=1.0)")
