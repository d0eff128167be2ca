"""A disk memo for pure, expensive reference computations (arb / mpmath), keyed by exact inputs.

The ci profile derandomizes and the checkpoints are cached, so a re-run of the report feeds the
references the same bytes again; the 16384 rigorous norm bounds of the family tables alone cost
~60 s of CPU per run.  A memoized function's result is stored under the SHA-256 of

  * its namespace (the function's qualified name),
  * the source of every module under properties/ but this one, and the versions of python-flint, mpmath and
    numpy (a change to any of them is a different key: nothing stale is ever served),
  * its arguments, bit for bit (numpy arrays by dtype, shape and bytes; floats by float.hex).

Only the reference is memoized, never the SUT: a planted mutant in models/ changes the inputs,
hence the key.  A mutant planted in properties/ by monkeypatching does not change the source
hash, so the suite's own tests run with the memo off (tests/conftest.py), and a user can turn it
off for a whole run with CERTIFY_REFERENCE_CACHE=0 (python -m certify --no-reference-cache).
The slow test tests/test_reference_memo.py::test_cached_norm_bounds_recompute recomputes every
cached norm bound of the default tier and compares.

Storage: one SQLite file per code hash under <CERTIFY_CACHE>/references/ (WAL, so xdist workers
read and write concurrently), values as JSON text (never pickle).  A file that is not a readable
SQLite database is an error naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ENV = "CERTIFY_REFERENCE_CACHE"  # "0" turns the memo off
REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parents[1]  # properties/

F = TypeVar("F", bound=Callable[..., Any])


class ReferenceCacheError(RuntimeError):
    """The reference cache file is unreadable."""


def cache_root() -> Path:
    """The suite's cache folder: env CERTIFY_CACHE, else <repo>/.certify-cache."""
    return Path(os.environ.get("CERTIFY_CACHE", REPO / ".certify-cache"))


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def code_hash() -> str:
    import flint
    import mpmath

    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # the memo itself computes nothing: a change to its keying changes key() anyway
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    for name, version in (("flint", flint.__version__), ("mpmath", mpmath.__version__), ("numpy", np.__version__)):
        h.update(f"{name}={version};".encode())
    return h.hexdigest()


def _feed(h: Any, x: Any) -> None:
    """Hash `x` unambiguously (type-tagged, length-prefixed); unknown types are an error, so two
    different arguments can never share a key."""
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        h.update(b"A" + a.dtype.str.encode() + repr(a.shape).encode() + struct.pack("<Q", a.nbytes))
        h.update(a.tobytes())
    elif isinstance(x, bool) or x is None:
        h.update(b"B" + repr(x).encode())
    elif isinstance(x, (int, np.integer)):
        h.update(b"I" + str(int(x)).encode() + b";")
    elif isinstance(x, (float, np.floating)):
        h.update(b"F" + float(x).hex().encode() + b";")
    elif isinstance(x, str):
        h.update(b"S" + struct.pack("<Q", len(x)) + x.encode())
    elif isinstance(x, (list, tuple)):
        h.update(b"L" + struct.pack("<Q", len(x)))
        for item in x:
            _feed(h, item)
    elif isinstance(x, dict):
        h.update(b"D" + struct.pack("<Q", len(x)))
        for k in sorted(x):
            _feed(h, k)
            _feed(h, x[k])
    else:
        raise TypeError(f"reference memo: cannot key an argument of type {type(x).__name__}")


def key(namespace: str, args: tuple, kwargs: dict) -> str:
    h = hashlib.sha256()
    h.update(namespace.encode() + b"\0" + code_hash().encode())
    _feed(h, list(args))
    _feed(h, kwargs)
    return h.hexdigest()


class _Store:
    """The SQLite file of the current code hash, one connection per process."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._path: Path | None = None

    def path(self) -> Path:
        return cache_root() / "references" / f"{code_hash()[:20]}.sqlite"

    def conn(self) -> sqlite3.Connection:
        path = self.path()
        if self._conn is None or self._pid != os.getpid() or self._path != path:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(path, timeout=120)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: a cache, rebuilt if lost
                conn.execute("CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.commit()
            except sqlite3.DatabaseError as exc:
                raise ReferenceCacheError(f"reference cache {path} is unreadable ({exc}); delete it to rebuild") from exc
            self._conn, self._pid, self._path = conn, os.getpid(), path
        return self._conn

    def get(self, k: str) -> str | None:
        try:
            row = self.conn().execute("SELECT value FROM memo WHERE key = ?", (k,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ReferenceCacheError(f"reference cache {self._path} is unreadable ({exc}); delete it to rebuild") from exc
        return None if row is None else row[0]

    def put(self, k: str, value: str) -> None:
        conn = self.conn()
        conn.execute("INSERT OR IGNORE INTO memo (key, value) VALUES (?, ?)", (k, value))
        conn.commit()


STORE = _Store()


def _encode(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, allow_nan=True)


def memoize(decode: Callable[[Any], Any]) -> Callable[[F], F]:
    """Memoize a pure reference function whose result JSON-encodes (a dataclass of plain fields,
    a tuple, floats); `decode` rebuilds it from the decoded JSON."""

    def wrap(fn: F) -> F:
        namespace = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not enabled():
                return fn(*args, **kwargs)
            k = key(namespace, args, kwargs)
            hit = STORE.get(k)
            if hit is not None:
                return decode(json.loads(hit))
            value = fn(*args, **kwargs)
            STORE.put(k, _encode(value))
            return value

        inner.uncached = fn  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]

    return wrap
