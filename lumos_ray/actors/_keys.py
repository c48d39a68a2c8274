"""Which base URLs a model API key may be sent to.

A workflow names its model's ``base_url`` (and maybe ``api_key_env``), but the keys
live in the environment of the process that runs the agent. Sending whatever key is
there to whatever URL a workflow names would hand ``OPENAI_API_KEY`` (or, through
``api_key_env``, any variable: ``AWS_SECRET_ACCESS_KEY``) to any server a workflow
author picks. So a key read from the environment is bound to base URLs that the
*same environment* allows, never the workflow:

* ``OPENAI_API_KEY`` -> ``https://api.openai.com/v1``; ``LUMOS_API_KEY`` -> the local
  gateway's default ``http://127.0.0.1:8000/v1`` (and ``localhost``);
* these two also go to ``LUMOS_OPENAI_BASE_URL`` / ``OPENAI_BASE_URL`` when set (the
  operator's own choice of server, as in the OpenAI SDK);
* any variable goes to the URLs listed for it in ``LUMOS_MODEL_KEY_URLS``:
  ``NAME=URL[,URL...][;NAME=URL...]``, e.g.
  ``OPENAI_API_KEY=https://my-proxy.example/v1;HF_KEY=https://api-inference.huggingface.co/v1``.

A listed URL matches a base URL with the same scheme, host and port (``:*`` in a
listed URL: any port) whose path is the listed path or below it. A literal
``api_key=`` passed in code goes to that object's own ``base_url`` (the caller holds
the secret and chose the server); durable runs never store one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lumos_ray.errors import ConfigError

__all__ = [
    "DEFAULT_KEY_URLS",
    "IMPLICIT_KEY_ENVS",
    "KEY_URLS_ENV",
    "KeyChoice",
    "allowed_urls",
    "choose_key",
    "url_allowed",
]

#: Where the environment lists extra (key variable -> base URLs) bindings.
KEY_URLS_ENV = "LUMOS_MODEL_KEY_URLS"
#: Bindings that need no configuration.
DEFAULT_KEY_URLS: dict[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("https://api.openai.com/v1",),
    "LUMOS_API_KEY": ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1"),
}
#: Variables read when a model names no key of its own, in this order.
IMPLICIT_KEY_ENVS = ("LUMOS_API_KEY", "OPENAI_API_KEY")
#: The operator's base-URL variables: the implicit keys may go there too.
_OPERATOR_URL_ENVS = ("LUMOS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FIX = (
    f"Bind the variable to the server in the environment of the process that runs the "
    f"agent: {KEY_URLS_ENV}='NAME=BASE_URL' (several: 'NAME=URL1,URL2;OTHER=URL'), or "
    f"point the model at a URL the key is already bound to."
)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int | None  # None: any port (a listed URL with ':*')
    path: str


def _parse(url: str, *, listed: bool) -> _Target:
    """Scheme, host, port and path of ``url`` (lowercased, default port filled in)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rpartition("@")[2]  # userinfo never decides the server
    if scheme not in _DEFAULT_PORTS or not netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    host, port_text = netloc, ""
    if netloc.startswith("["):  # IPv6 literal
        host, _, rest = netloc[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif ":" in netloc:
        host, _, port_text = netloc.rpartition(":")
    port: int | None
    if port_text == "*" and listed:
        port = None
    elif port_text:
        if not port_text.isdigit():
            raise ValueError(f"{url!r} has an invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS[scheme]
    return _Target(scheme, host.lower().rstrip("."), port, parts.path.rstrip("/"))


def _matches(base: _Target, entry: _Target) -> bool:
    return (
        base.scheme == entry.scheme
        and base.host == entry.host
        and (entry.port is None or base.port == entry.port)
        and (base.path == entry.path or base.path.startswith(entry.path + "/"))
    )


def _configured(env: Mapping[str, str]) -> dict[str, list[str]]:
    """``LUMOS_MODEL_KEY_URLS`` parsed; a malformed value is a ConfigError."""
    out: dict[str, list[str]] = {}
    for item in (env.get(KEY_URLS_ENV) or "").split(";"):
        if not item.strip():
            continue
        name, eq, urls = item.partition("=")
        listed = [u.strip() for u in urls.split(",") if u.strip()]
        if not eq or not name.strip() or not listed:
            raise ConfigError(
                f"{KEY_URLS_ENV} has an entry {item.strip()!r} that is not NAME=URL[,URL].",
                fix=_FIX,
            )
        for u in listed:
            try:
                _parse(u, listed=True)
            except ValueError as exc:
                raise ConfigError(f"{KEY_URLS_ENV}: {name.strip()}: {exc}.", fix=_FIX) from None
        out.setdefault(name.strip(), []).extend(listed)
    return out


def allowed_urls(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The base URLs the key in variable ``name`` may be sent to."""
    env = os.environ if env is None else env
    urls = list(DEFAULT_KEY_URLS.get(name, ()))
    if name in IMPLICIT_KEY_ENVS:
        urls += [env[v] for v in _OPERATOR_URL_ENVS if env.get(v)]
    urls += _configured(env).get(name, [])
    return urls


def url_allowed(name: str, base_url: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the key in variable ``name`` may be sent to ``base_url``."""
    try:
        base = _parse(base_url, listed=False)
    except ValueError:
        return False
    for entry in allowed_urls(name, env):
        try:
            if _matches(base, _parse(entry, listed=True)):
                return True
        except ValueError:
            continue  # an operator URL variable that is not a URL binds nothing
    return False


def _shown(url: str) -> str:
    """``url`` as it may appear in a message: a password in it replaced by ``***``."""
    return re.sub(r"(://[^/@\s]*?:)[^@/\s]*@", r"\1***@", url)


@dataclass(frozen=True)
class KeyChoice:
    """The key to send (or None) and the variables holding a key that was withheld."""

    key: str | None
    withheld: tuple[str, ...] = ()

    def hint(self, base_url: str) -> str:
        """Why a 401 may have happened: a key was there but not bound to this URL."""
        if not self.withheld:
            return ""
        names = ", ".join(self.withheld)
        url = _shown(base_url)
        return (
            f" ({names} is set here but was not sent: it is not bound to {url}; to "
            f"send it there, set {KEY_URLS_ENV}='{self.withheld[0]}={url}')"
        )


def choose_key(
    base_url: str,
    *,
    api_key: str | None = None,
    api_key_env: str | None = None,
    env: Mapping[str, str] | None = None,
) -> KeyChoice:
    """The key an OpenAI-compatible client at ``base_url`` may send.

    A literal ``api_key`` is sent as given. A key named by ``api_key_env`` that is set
    but not bound to ``base_url`` is a ConfigError (the model asked for that key, and
    silently dropping it would only turn into a 401 later). The implicit keys
    (``LUMOS_API_KEY``, ``OPENAI_API_KEY``) are sent only where bound and otherwise
    withheld without an error: a keyless local server must keep working while
    ``OPENAI_API_KEY`` happens to be set."""
    env = os.environ if env is None else env
    if api_key:
        return KeyChoice(api_key)
    if api_key_env and env.get(api_key_env):
        if not url_allowed(api_key_env, base_url, env):
            bound = [_shown(u) for u in allowed_urls(api_key_env, env)]
            raise ConfigError(
                f"The model's api_key_env {api_key_env!r} may not be sent to "
                f"{_shown(base_url)}: that variable is bound to {bound or 'no URL'}. "
                "A workflow cannot send a "
                "key to a server the environment holding the key did not name.",
                fix=_FIX,
            )
        return KeyChoice(env[api_key_env])
    withheld: list[str] = []
    for name in IMPLICIT_KEY_ENVS:
        if env.get(name):
            if url_allowed(name, base_url, env):
                return KeyChoice(env[name], tuple(withheld))
            withheld.append(name)
    return KeyChoice(None, tuple(withheld))
