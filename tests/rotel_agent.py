"""The rotel collector's ``rotel-agent`` binary (from the ``rotel`` wheel) and how to start it.

The agent embeds CPython and links the running interpreter's ``libpython``. A system Python keeps
that library where the loader looks; a pyenv build (the Python 3.10/3.12/3.13 CI legs) keeps it
in its own ``lib`` directory, so the agent is started with that directory on its library path.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import rotel

AGENT = Path(rotel.__file__).parent / "rotel-agent"


def agent_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the interpreter's library directory searched first."""
    out = dict(os.environ if env is None else env)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        out["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libdir), out.get("LD_LIBRARY_PATH", "")) if p
        )
    return out
