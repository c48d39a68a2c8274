"""The dashboard's languages: English and Simplified Chinese, one message catalog each.

Why catalogs as JSON files (``messages/en.json``, ``messages/zh.json``) rather than
gettext: two languages, a few hundred strings, and a unit test that checks both
catalogs hold the same keys and every key a template uses. The language comes from a
``lumos_lang`` cookie (the switch in the header) or else the browser's
``Accept-Language``; English when neither names a language we have.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["LANGS", "LANG_COOKIE", "catalog", "negotiate", "translate"]

#: Languages with a catalog, in the order the switch shows them.
LANGS: tuple[str, ...] = ("en", "zh")
LANG_COOKIE = "lumos_lang"
_MAX_HEADER = 512  # Accept-Language longer than this is ignored past the bound
_MAX_TAGS = 20


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    """The message catalog of ``lang`` (one of LANGS), read once per process."""
    if lang not in LANGS:
        raise KeyError(lang)
    text = resources.files(__package__).joinpath("messages", f"{lang}.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)
    return data


def negotiate(accept_language: str | None, cookie: str | None) -> str:
    """The page language: the cookie's when it names one we have, else the first
    language of ``Accept-Language`` (by q-value) we have, else English."""
    if cookie in LANGS:
        return str(cookie)
    best, best_q = "en", -1.0
    for i, part in enumerate((accept_language or "")[:_MAX_HEADER].split(",")):
        if i >= _MAX_TAGS:
            break
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > best_q:
            best, best_q = primary, q
    return best


def translate(lang: str, key: str, **values: Any) -> str:
    """The message ``key`` in ``lang`` with ``{name}`` placeholders filled; the
    English text, then the key itself, when a catalog lacks it (never an error page
    for a missing string; the catalog test catches it first)."""
    text = catalog(lang).get(key) or catalog("en").get(key) or key
    if values:
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            return text
    return text
