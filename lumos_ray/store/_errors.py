"""The store's one error type.

A store problem is nearly always configuration (a wrong URL, a server that is down,
a database written by a newer release), so :class:`StoreError` is a
:class:`~lumos_ray.errors.ConfigError`: callers that already handle configuration
errors handle it, and the CLI prints it as a message with a fix, never a traceback.
"""

from __future__ import annotations

from lumos_ray.errors import ConfigError

__all__ = ["StoreError"]


class StoreError(ConfigError):
    """The run store cannot be opened or used; ``fix`` says what to do.

    Messages name the store URL with its password masked (``***``)."""
