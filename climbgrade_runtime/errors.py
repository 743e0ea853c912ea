"""Exceptions the runtime raises: each message names the problem and, where there is one, the fix.

Every error a user can cause derives from ClimbgradeError, so the CLI turns it into one line and
exit code 2 instead of a traceback.
"""

from __future__ import annotations


class ClimbgradeError(Exception):
    """Base class: a user-facing problem with a clear one-line message."""


class RouteError(ClimbgradeError):
    """A route that cannot be graded (bad JSON shape, unknown board, hold not on the layout...)."""


class ModelError(ClimbgradeError):
    """A model/sidecar pair that cannot be used (missing, corrupt, mismatched, wrong version)."""


class DatabaseError(ClimbgradeError):
    """A boardlib database that cannot be read (missing file, table or column)."""
