"""Errors a user or an operator can cause, each with a message that says what to change.

``OcldError`` is the base of every error the command line reports as one line (``ocld: ...``)
and a non-zero exit, never a traceback. A message never contains a secret: URLs are shown
through ``redact_url`` and passwords not at all.
"""

from __future__ import annotations


class OcldError(Exception):
    """An expected failure: printed as one line by the CLI, which exits with ``exit_code``."""

    exit_code = 2


class FatalConfigError(OcldError):
    """The daemon cannot work with the servers or credentials it was given (wrong password, missing
    ACL permission, SASL mismatch, an unreachable Redis at start): retrying cannot help."""


class DaemonFailed(OcldError):
    """The daemon stopped because it cannot go on safely (an undecodable batch, a lost lease, a
    learner process that keeps dying). The status says ``failed`` with the same reason."""

    exit_code = 3
