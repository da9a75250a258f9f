"""Serving a policy over the network (docs/protocol.md).

- :mod:`vlaforge.serving.protocol`: the wire format (msgpack maps, numpy arrays, raw or JPEG images); numpy
  only.
- :mod:`vlaforge.serving.client`: ``PolicyClient``, the robot side (numpy, msgpack, websockets: no torch).
- :mod:`vlaforge.serving.server`: ``PolicyServer`` and ``vlaforge serve`` (loads the model: torch).

Names are imported lazily, so importing the client never pulls in the server's dependencies.
"""

from __future__ import annotations

from vlaforge.names import lazy_exports

_EXPORTS = {
    "PolicyClient": "client", "ServerError": "client", "ServerTimeout": "client",
    "AuthenticationError": "client", "ServerUnavailable": "client",
    "ProtocolError": "protocol", "PROTOCOL_VERSION": "protocol",
    "PolicyServer": "server", "ServeConfig": "server",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
