"""Key validation, prefixing and the one reference glob matcher (Redis grammar)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from kvstore.errors import InvalidKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "compile_glob",
    "escape_glob",
    "glob_literal_prefix",
    "glob_match",
    "is_match_all",
    "prefix_upper_bound",
    "validate_key",
    "validate_keys",
    "widen_glob",
]

MAX_KEY_BYTES = 1024

# Keys already proven valid; a bounded memo keeps the hot path to one dict lookup.
_valid: dict[str, None] = {}
_VALID_MEMO_SIZE = 4096


def text_problem(text: str) -> str | None:
    """What stops ``text`` from being stored as text by every backend (a NUL, a lone surrogate), or ``None``."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate"
    return None


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid kvstore key, else raise `InvalidKeyError`.

    A key is a non-empty ``str`` of at most 1024 UTF-8 bytes with no NUL and no
    lone surrogate. Every other character is ordinary.
    """
    if key.__class__ is str and key in _valid:
        return key
    if not isinstance(key, str):
        raise InvalidKeyError(f"keys must be str, not {type(key).__name__}", key=None)
    if not key:
        raise InvalidKeyError("keys must not be empty", key=key)
    problem = text_problem(key)
    if problem is not None:
        raise InvalidKeyError(f"key {key!r} {problem}", key=key)
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {size} UTF-8 bytes; the limit is {MAX_KEY_BYTES}", key=key[:64])
    if len(_valid) >= _VALID_MEMO_SIZE:
        _valid.clear()
    _valid[str(key)] = None
    return key


def validate_keys(keys: Iterable[object]) -> list[str]:
    """Validate every key of ``keys`` before any I/O; return them as a list.

    A single ``str`` (or ``bytes``) is a `TypeError`, not the keys of its characters:
    ``delete_many("session:42")`` must never delete the keys ``"s"``, ``"e"``...
    """
    if isinstance(keys, str | bytes):
        raise TypeError(f"expected an iterable of keys, not a single {type(keys).__name__}")
    names: list[str] = list(keys)  # type: ignore[arg-type]  # checked below
    valid = _valid
    for key in names:
        if key.__class__ is not str or key not in valid:  # the memo spares a call per known key
            validate_key(key)
    return names


#: The longest key prefix, in UTF-8 bytes (a prefixed key must still fit the backends).
MAX_PREFIX_BYTES = 512


def validate_prefix(prefix: object) -> str:
    """A prefix is a ``str`` (possibly empty) with a key's character rules, at most 512 UTF-8 bytes."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"key_prefix must be str, not {type(prefix).__name__}")
    problem = text_problem(prefix)
    if problem is not None:
        raise InvalidKeyError(f"key_prefix {problem}", key=prefix)
    if len(prefix.encode("utf-8")) > MAX_PREFIX_BYTES:
        raise InvalidKeyError(f"key_prefix must be at most {MAX_PREFIX_BYTES} UTF-8 bytes", key=prefix[:64])
    return prefix


def validate_namespace(namespace: object, what: str = "namespace") -> str:
    """The first part of the keys a chat history or session store builds (``<namespace>:<id>``).

    It holds no ``:``, so no namespace and id make the key of another namespace and id
    (``chat`` + ``acme:42`` and ``chat:acme`` + ``42`` would both be ``chat:acme:42``: two
    tenants reading each other), and it does not end in ``.meta`` (a chat history's own
    second key, ``<namespace>.meta:<id>``). Else `InvalidKeyError`.
    """
    if not isinstance(namespace, str):
        raise InvalidKeyError(f"{what} must be str, not {type(namespace).__name__}")
    if not namespace or ":" in namespace or namespace.endswith(".meta"):
        raise InvalidKeyError(
            f"{what} {namespace!r} must be non-empty, without ':' and not ending in '.meta' (keys are "
            f"'<{what}>:<id>': with a ':' in it, two {what}s and ids could name the same key); use "
            "another character, e.g. 'chat.acme'",
            key=namespace[:64],
        )
    problem = text_problem(namespace)
    if problem is not None:
        raise InvalidKeyError(f"{what} {problem}", key=namespace[:64])
    return namespace


# --- the reference glob matcher -------------------------------------------------------
#
# Redis's stringmatchlen() (util.c) walked character by character, compiled once
# to a Python regular expression. Patterns match characters, not bytes.


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; return (regex, next index)."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    members: list[str] = []
    while True:
        if i < n and pattern[i] == "\\" and n - i >= 2:
            members.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if i < n and pattern[i] == "]":
            i += 1
            break
        if i >= n:
            # Redis treats an unclosed class as closed at the end of the pattern.
            break
        if n - i >= 3 and pattern[i + 1] == "-":
            lo, hi = pattern[i], pattern[i + 2]
            if lo > hi:
                lo, hi = hi, lo
            members.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 3
            continue
        members.append(re.escape(pattern[i]))
        i += 1
    if not members:
        return ("(?s:.)" if negate else "(?!)"), i
    body = "".join(members)
    return (f"[^{body}]" if negate else f"[{body}]"), i


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(".*")
            continue
        if c == "?":
            out.append(".")
            i += 1
        elif c == "[":
            regex, i = _bracket(pattern, i + 1)
            out.append(regex)
        elif c == "\\" and n - i >= 2:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Compile a Redis glob pattern into a predicate over keys (whole-string match)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
    if is_match_all(pattern):
        return _always
    fullmatch = _compile(pattern).fullmatch
    return lambda key: fullmatch(key) is not None


def _always(key: str) -> bool:
    return True


def glob_match(pattern: str, key: str) -> bool:
    """Whether ``key`` matches the Redis glob ``pattern`` (the reference matcher)."""
    return compile_glob(pattern)(key)


def is_match_all(pattern: str) -> bool:
    """Whether ``pattern`` is one or more ``*`` only (matches every key)."""
    return bool(pattern) and pattern.strip("*") == ""


def glob_literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with (escapes resolved).

    Backends use it to narrow a scan to an index range before the exact matcher runs.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "*?[":
            break
        if c == "\\" and n - i >= 2:
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    Returns ``None`` when there is none (empty prefix, or only U+10FFFF characters),
    meaning the range is unbounded above. Code-point order equals UTF-8 byte order,
    so the bound works for SQL ``BINARY`` collation and Postgres ``COLLATE "C"``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def escape_glob(text: str) -> str:
    """Escape ``text`` so that, as a Redis glob, it matches itself literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def widen_glob(pattern: str) -> str:
    """A Redis glob matching a superset of ``pattern``, byte-safe for ``SCAN MATCH``.

    Redis matches bytes; we match characters. Each ``?`` and each ``[...]`` class
    is widened to ``*``; escapes and literals are kept. The replies are then
    filtered with the reference matcher.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and n - i >= 2:
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c in "*?":
            i += 1
        elif c == "[":
            _, i = _bracket(pattern, i + 1)
        else:
            out.append(c)
            i += 1
            continue
        if not out or out[-1] != "*":
            out.append("*")
    return "".join(out)
