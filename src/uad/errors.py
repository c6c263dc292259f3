"""How a run ends when it does not finish: `UserError`, the base of the errors a user can fix (`run.py`
prints their message alone, without a traceback, and exits with status 1), and `RunInterrupted`, a run
stopped by SIGTERM or SIGINT (exit status 128 + the signal). Imports nothing heavy: `run.py` uses it before
torch is loaded."""

from __future__ import annotations

import signal


class UserError(Exception):
    """An error whose message names the file or key at fault and the fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and what to give instead."""


class UserKeyError(UserError, KeyError):
    """A name that is not there (a backbone, a checkpoint's tensors); a KeyError that prints unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunInterrupted(BaseException):
    """The run was stopped by a signal (a BaseException, like KeyboardInterrupt: nothing may swallow it);
    `checkpoint` is the one saved at `step`, from which `ckpt_path=` resumes."""

    def __init__(self, signum: int, checkpoint: str | None = None, step: int | None = None) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        where = f" at step {step}" if step is not None else ""
        saved = f"; resume with ckpt_path={checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted by {self.signal_name}{where}{saved}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
