"""Module-level Flower apps for ``flwr run`` (deployment across sites).

The app directory that ``lumos federate run`` writes points Flower at
``lumos_ray.federated.app:server_app`` / ``:client_app``; the ServerApp reads the
FederationConfig from the run config. Importing this module builds two small objects
and imports flwr, nothing else (torch loads on the first message).
"""

from __future__ import annotations

from lumos_ray.federated._client import build_client_app
from lumos_ray.federated._server import build_server_app

__all__ = ["client_app", "server_app"]

server_app = build_server_app(mode="deployment")
client_app = build_client_app()
