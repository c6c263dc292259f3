"""The one base class of the errors a user can fix (a missing dataset, weights or checkpoint; a bad file):
`run.py` prints their message alone, without a traceback, and exits with status 1."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message names the file or key at fault and the fix."""
