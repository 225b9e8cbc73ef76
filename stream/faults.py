"""Fault injection for crash tests: inert unless ``OCLD_FAULT`` is set.

``OCLD_FAULT="snapshot.after_chunk:3"`` makes the process SIGKILL itself the 3rd time it
reaches the point ``snapshot.after_chunk``. Several points may be given, comma-separated.
Production never sets the variable; then :func:`fault_point` is a dictionary lookup.
(This is the one environment variable read outside ``stream.config``, on purpose: the
hook must work before any config is loaded and must not be settable from a config file.)
"""

from __future__ import annotations

import os
import signal

_PLAN: dict[str, int] = {}
for _item in filter(None, os.environ.get("OCLD_FAULT", "").split(",")):
    _name, _, _count = _item.partition(":")
    _PLAN[_name.strip()] = int(_count or 1)
_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    if not _PLAN or name not in _PLAN:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] == _PLAN[name]:
        os.kill(os.getpid(), signal.SIGKILL)
