"""The simulated provider: deterministic, realistic answers on the OpenAI and Anthropic wires.

- `gateway.sim.core.SimCore`: OpenAI body in, response dict / chunk dicts out (pure but for
  the prompt-cache LRU it owns).
- `gateway.sim.server.create_app` / `serve`: the same as an HTTP server (`tollgate sim`).
- `gateway.sim.transport.SimProvider`: the same in process, for `provider: sim` deployments.

Faults and timing are chosen per request by `x-sim-*` headers or `[[sim:key=value]]`
markers in the prompt; see `gateway.sim.faults`.

The names are imported on first use, so importing `gateway.sim` costs nothing and cannot
cycle with `gateway.providers`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SimCore", "SimProvider", "create_app", "serve"]

_HOMES = {
    "SimCore": "gateway.sim.core",
    "SimProvider": "gateway.sim.transport",
    "create_app": "gateway.sim.server",
    "serve": "gateway.sim.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
