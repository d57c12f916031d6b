"""The names of the files and folders catdog writes: derived injectively from what they stand for.

One helper family for the whole codebase:

- :func:`safe_name`: one portable name for one string (a class name, a layer, a label). A string that is
  already a portable name is kept as is; any other gets its cleaned text plus ``~`` and a hash of the
  original, so two different strings never share a name (``a b`` -> ``a_b~...`` while ``a_b`` stays).
  ``~`` never occurs in a kept name, so kept and hashed names cannot meet.
- :func:`unique_names`: one name per item of a list (image files, class folders), unique across the
  whole list and also on case-insensitive file systems (macOS, Windows): items whose names would meet get
  a hash of their full key (the image's path). It is a function of the list alone, so every process of a
  multi-process run derives the same names.
- :func:`pair_name`: ``<a>_as_<b>`` for two names of such a list, hashed when another pair reads the same.
- :func:`distinct_labels`: labels for display (ImageNet's two "crane" classes, compare's experiments), made
  distinct with a readable suffix.

Names are bounded to 100 UTF-8 bytes plus the hash suffix (file systems allow 255).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Sequence

__all__ = ["HASH_SEP", "distinct_labels", "pair_name", "safe_name", "unique_names"]

HASH_SEP = "~"  # never in a kept name: separates a cleaned name from the hash of its original
_HASH_CHARS = 10  # hex digits of sha256: 40 bits
_MAX_NAME_BYTES = 100
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _digest(text: str) -> str:
    # sha256, not hash(): the same in every process and every run.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _clean(name: str) -> str:
    """Unicode letters and digits, ``-``, ``_`` and single dots; no leading/trailing dot or underscore."""
    text = unicodedata.normalize("NFC", name)
    text = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    text = re.sub(r"\.{2,}", ".", re.sub(r"_{2,}", "_", text)).strip("._") or "unnamed"
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = f"_{text}"
    return text


def _bounded(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_name(name: str) -> str:
    """A portable file/folder name for ``name``, different for every different ``name``.

    A name that is already portable (letters, digits, ``-``, ``_``, single inner dots, NFC, at most 100
    bytes, not a Windows device name) is returned unchanged; any other becomes its cleaned, shortened text,
    ``~`` and 10 hex digits of the SHA-256 of the original: ``"a/b"`` -> ``"a_b~<hash>"``, ``".."`` ->
    ``"unnamed~<hash>"``. Never empty, never a path separator, never ``..``, never hidden.
    """
    clean = _clean(name)
    if clean == name and len(clean.encode("utf-8")) <= _MAX_NAME_BYTES:
        return clean
    return f"{_bounded(clean, _MAX_NAME_BYTES)}{HASH_SEP}{_digest(name)}"


def unique_names(stems: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
    """Per item, :func:`safe_name` of its stem, made unique across the list by a hash of its key.

    Args:
        stems: the readable part of each name (an image's file stem, a class name).
        keys: what tells the items apart (an image's full path); default: the stems. A key listed twice
            gets its occurrence number, so even repeated entries get their own names.

    Returns:
        Names that differ pairwise even ignoring case; an item keeps its plain :func:`safe_name` when no
        other item's name equals it (ignoring case).
    """
    keys = list(stems) if keys is None else list(keys)
    if len(keys) != len(stems):
        raise ValueError(f"got {len(stems)} stems for {len(keys)} keys")
    base = [safe_name(stem) for stem in stems]
    counts: dict[str, int] = {}
    for name in base:
        counts[name.casefold()] = counts.get(name.casefold(), 0) + 1
    seen: dict[str, int] = {}
    result = []
    for name, key in zip(base, keys):
        if counts[name.casefold()] > 1:
            n = seen.get(key, 0)
            seen[key] = n + 1
            name = f"{name}{HASH_SEP}{_digest(key if n == 0 else key + chr(0) + str(n))}"
        result.append(name)
    return result


def pair_name(a: str, b: str, names: Collection[str], sep: str = "_as_") -> str:
    """``a + sep + b`` for two of ``names`` (e.g. class folders), unambiguous among all pairs of ``names``.

    ``a_as_b_as_c`` reads as (a_as_b, c) or (a, b_as_c) when both are classes: such a pair gets a hash
    suffix of the pair, so every (a, b) has its own folder, also on case-insensitive file systems.
    """
    joined = f"{a}{sep}{b}"
    folded = {name.casefold() for name in names}
    start = joined.find(sep)
    while start >= 0:
        left, right = joined[:start], joined[start + len(sep) :]
        if (left, right) != (a, b) and left.casefold() in folded and right.casefold() in folded:
            return f"{joined}{HASH_SEP}{_digest(a + chr(0) + b)}"
        start = joined.find(sep, start + 1)
    return joined


def distinct_labels(labels: Sequence[str], suffix: str = " #{n}") -> list[str]:
    """Display labels made distinct: the second ``x`` becomes ``x #2`` (``suffix`` formats ``n``), skipping
    any suffixed text that is itself one of the labels."""
    taken = set(labels)
    counts: dict[str, int] = {}
    result = []
    for label in labels:
        n = counts.get(label, 0) + 1
        candidate = label
        if n > 1:
            candidate = label + suffix.format(n=n)
            while candidate in taken:
                n += 1
                candidate = label + suffix.format(n=n)
            taken.add(candidate)
        counts[label] = n
        result.append(candidate)
    return result
