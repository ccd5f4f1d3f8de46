"""What an ingest remembers: the ids that landed (the resume state file) and the rows that failed
(the dead-letter file).

Re-running is idempotent: rows whose id the target already holds are skipped
(:func:`present_ids`), and a small state file (:class:`IngestState`) records every id that
landed, so ``resume=True`` continues an interrupted run without re-embedding what landed
(also for stores that cannot look ids up). A row that cannot be read, embedded or written
goes to the dead-letter JSONL (:class:`DeadLetters`) with its location and reason, and the
run goes on.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from typing import Any, Mapping, Sequence

from embedder.errors import InputError

from .sources import json_safe

log = logging.getLogger(__name__)


# ============================================================================ landed ids
def present_ids(store: Any, ids: Sequence[str]) -> set[str] | None:
    """Which of ``ids`` the store already holds, or None when the store cannot tell.

    Every bundled connector offers ``store.existing_ids(ids)``; a third-party store
    without it relies on the resume state file.
    """
    if not ids:
        return set()
    fn = getattr(store, "existing_ids", None)
    if callable(fn):
        return {str(i) for i in fn(list(ids))}
    return None


# ============================================================================ dead letters and state
class DeadLetters:
    """The dead-letter JSONL: one line per failed row (thread-safe, created on first use).

    Each line holds ``location``, ``id``, ``stage`` (``read``, ``embed``, ``write``),
    ``reason`` and ``row`` (the row's text, media and metadata, when it was read).
    A new run starts the file afresh (a resumed run retries the previous failures).
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = pathlib.Path(path) if path else None
        self.count = 0
        self._fh: Any = None
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def write(self, location: str, *, stage: str, reason: str, row_id: str | None = None,
              row: Mapping[str, Any] | None = None) -> None:
        """Record one failed row."""
        record = {"location": location, "id": row_id, "stage": stage, "reason": reason,
                  "row": _row_summary(row) if row is not None else None}
        with self._lock:
            self.count += 1
            log.info("dead letter: %s (%s): %s", location, stage, reason)
            if self.path is None:
                return
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # a name that is not UTF-8 (a lone surrogate) is written as a \udcff escape, never lost
                self._fh = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _row_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("id", "text", "image", "video", "metadata"):
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, str) and key == "text" and len(value) > 500:
            value = value[:500] + "..."
        out[key] = json_safe(value)
    return out


class IngestState:
    """A small append-only file of the ids that landed, so that a run can resume.

    The first line identifies the ingest (source, target, collection, dim); each further
    line is a JSON list of ids written by one batch, appended after the write succeeded.
    A torn last line (the process was killed while writing it) is ignored.

    Args:
        path: the state file.
        key: what identifies this ingest; a resumed run must match it.
        resume: keep (and load) the ids of an earlier run; otherwise start afresh.

    Raises:
        InputError: ``resume`` and the file belongs to another ingest.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike, *, key: Mapping[str, Any], resume: bool) -> None:
        self.path = pathlib.Path(path)
        self.key = {str(k): json_safe(v) for k, v in key.items()}
        self.landed: set[str] = set()
        self.resumed = False
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            self._load()
            self.resumed = True
            self._fh = self.path.open("a", encoding="utf-8")
        else:
            if resume:
                log.info("no state file at %s: starting from the beginning", self.path)
            self._fh = self.path.open("w", encoding="utf-8")
            self._fh.write(json.dumps({"qvl_ingest_state": self.VERSION, **self.key}) + "\n")
            self._fh.flush()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as fh:
            header_line = fh.readline()
            try:
                header = json.loads(header_line)
            except json.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or header.get("qvl_ingest_state") != self.VERSION:
                raise InputError(f"{self.path} is not a qvl ingest state file")
            theirs = {k: header.get(k) for k in self.key}
            if theirs != self.key:
                diff = {k: (theirs[k], self.key[k]) for k in self.key if theirs[k] != self.key[k]}
                raise InputError(f"state file {self.path} belongs to another ingest ({diff} as (then, now)); "
                                 "drop --resume to start afresh, or pass another --state file")
            for line in fh:
                try:
                    ids = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line
                if isinstance(ids, list):
                    self.landed.update(str(i) for i in ids)

    def record(self, ids: Sequence[str]) -> None:
        """Append the ids of one batch that landed."""
        if not ids:
            return
        with self._lock:
            self.landed.update(ids)
            self._fh.write(json.dumps(list(ids)) + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

