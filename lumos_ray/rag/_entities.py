"""Entity names → graph keys, and the rules that make variants of one name one node.

Kept free of heavy imports (no model clients) because the shard state, the query path
and both extractors all need it.

Rules (no model):

* **Normalization** (:func:`entity_key`): case, punctuation, a leading "the", a
  parenthetical ("Mercury (planet)"), a possessive ("Pell's") and an honorific
  ("Dr.", "Professor", "Sir", ...) do not make another entity.
* **Page aliases** (:func:`title_keys`): a document titled "Young, New South Wales" is
  the page of "young new south wales" and of "young" (the part before the comma, the
  way encyclopedias disambiguate places).
* **Coreference inside a chunk** (:func:`coreference`): a one-word name that is the last
  word of a longer person-like name in the same chunk (or its title) is that person:
  after "Osric Pell" (or in the document "Osric Pell"), "Pell" means Osric Pell. So is
  that word after a title that can also start a name of its own ("Captain Pell",
  "Judge Pell", "General Pell": :data:`_ROLE_TITLES`, folded only here, where the
  chunk names the person; "General Motors" elsewhere stays a name).
"""

from __future__ import annotations

import re

__all__ = ["coreference", "entity_key", "title_keys"]

_PAREN = re.compile(r"\s*\([^)]*\)")
_NONWORD = re.compile(r"[^\w]+")
_POSSESSIVE = re.compile(r"(?<=\w)['\u2019]s?\b")
# Only titles that never start a name of their own ("St. Louis", "General Motors" and
# "Lady Gaga" do, so saint/general/lady are not here).
_HONORIFICS = frozenset("mr mrs ms miss dr prof professor sir dame rev reverend".split())
# Titles of rank and office, used before a surname. They also start names ("General
# Motors", "Captain America", "Lady Gaga"), so entity_key keeps them; coreference folds
# "<title> <word>" into a person of the same chunk whose name ends with that word.
# Titles used before given names (king, queen, saint, sister, ...) are not here: "King
# George" is not David Lloyd George, "St. Louis" is not Joe Louis.
_ROLE_TITLES = frozenset(
    """captain capt colonel col general gen major lieutenant lt sergeant sgt admiral
    commander commodore marshal judge justice lord lady count countess baron baroness
    duke duchess president senator governor mayor chancellor minister bishop
    archbishop cardinal rabbi doctor master mister madam madame""".split()
)


def entity_key(name: str) -> str:
    """Normalized entity id: 'The Dandy Warhols (band)' → 'dandy warhols',
    "Dr. Pell's" → 'pell'."""
    text = _POSSESSIVE.sub("", _PAREN.sub("", name))
    words = _NONWORD.sub(" ", text.lower()).split()
    if words and words[0] == "the":
        words = words[1:]
    while len(words) > 1 and words[0] in _HONORIFICS:
        words = words[1:]
    return " ".join(words)


def title_keys(title: str) -> list[str]:
    """Keys a document titled ``title`` is the page of: its own key, and the key of the
    part before a comma when there is one."""
    keys = [entity_key(title)]
    if "," in title:
        head = entity_key(title.split(",", 1)[0])
        if head and head not in keys and not head.isdigit():
            keys.append(head)
    return [k for k in keys if k]


def _person_like(key: str) -> bool:
    words = key.split()
    return 2 <= len(words) <= 4 and not any(w in ("of", "de", "von", "van", "and") for w in words)


def _titled(key: str) -> str | None:
    """'captain pell' → 'pell' (titles, then one word); anything else → None."""
    words = key.split()
    if len(words) >= 2 and all(w in _ROLE_TITLES or w in _HONORIFICS for w in words[:-1]):
        return words[-1]
    return None


def coreference(keys: list[str], title_key: str = "") -> dict[str, str]:
    """Short key → the longer key it refers to, for keys of one chunk (see module doc).

    Only a single word (alone or after titles: "Pell", "Captain Pell") that ends exactly
    one person-like name is resolved: with two candidates ("Anna Pell", "Osric Pell")
    "Pell" is ambiguous and left alone. A titled name is never a candidate itself.
    """
    longer = [
        k for k in dict.fromkeys([title_key, *keys]) if k and _person_like(k) and _titled(k) is None
    ]
    out: dict[str, str] = {}
    for k in keys:
        word = k if " " not in k else _titled(k)
        if word is None:
            continue
        owners = [full for full in longer if full != k and full.endswith(" " + word)]
        if len(owners) == 1:
            out[k] = owners[0]
    return out
