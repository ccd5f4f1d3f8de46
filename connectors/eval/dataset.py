"""The labelled set ``qvl eval`` reads: a BEIR-style folder, or the same in memory.

A folder holds three files::

    corpus.jsonl   {"id": "d1", "text": "...", "image": "img/d1.png", "color": "red"}   one document a line
    queries.jsonl  {"id": "q1", "text": "a red bicycle"}  or  {"id": "q2", "image": "q/bike.png"}
    qrels.tsv      q1<TAB>d1<TAB>1        query id, document id, relevance (> 0: relevant)

``_id`` is read as ``id`` (BEIR's spelling) and a BEIR ``title`` is put before the text.
A document's content is any of ``text``, ``image``, ``video`` and ``page`` (an image of a
document page; several make one fused vector); a relative media path is read from the
folder. Any other key of a document is kept as a field (written with the row). A document
or query may carry a precomputed ``vector`` (a list of numbers at the full dim); a set
whose every document and query carries one needs no embedder. ``qrels.tsv`` may start with
a header line (``query-id corpus-id score``); ``qrels/test.tsv`` (BEIR's place) is read
when there is no ``qrels.tsv``.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from embedder.errors import InputError

CONTENT = ("text", "image", "video", "page")
MEDIA = ("image", "video", "page")


@dataclass
class Dataset:
    """A labelled set: documents, queries and which documents answer which query.

    Attributes:
        corpus: documents, each a dict with ``id``, content keys (``text``, ``image``, ``video``,
            ``page``), an optional ``vector`` and any fields.
        queries: queries, each a dict with ``id`` and ``text`` and/or ``image``/``video``
            (or only a ``vector``).
        qrels: ``{query id: {document id: relevance}}``; relevance above 0 is relevant.
        name: what reports call the set (the folder's name).
    """

    corpus: list[dict]
    queries: list[dict]
    qrels: dict[str, dict[str, int]]
    name: str = "dataset"
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.corpus = [_checked(doc, i, "document") for i, doc in enumerate(self.corpus)]
        self.queries = [_checked(q, i, "query") for i, q in enumerate(self.queries)]
        ids = {d["id"] for d in self.corpus}
        if len(ids) != len(self.corpus):
            raise InputError("the corpus has documents with the same id")
        qids = {q["id"] for q in self.queries}
        qrels: dict[str, dict[str, int]] = {}
        unknown_docs = 0
        for qid, docs in self.qrels.items():
            if qid not in qids:
                continue
            kept = {str(d): int(r) for d, r in docs.items() if str(d) in ids}
            unknown_docs += len(docs) - len(kept)
            if any(r > 0 for r in kept.values()):
                qrels[str(qid)] = kept
        if unknown_docs:
            self.problems.append(f"{unknown_docs} judgement(s) name documents that are not in the corpus "
                                 "(left out)")
        unjudged = [q["id"] for q in self.queries if q["id"] not in qrels]
        if unjudged:
            self.problems.append(f"{len(unjudged)} query(ies) without a relevant document are left out "
                                 f"(first: {unjudged[0]!r})")
        self.queries = [q for q in self.queries if q["id"] in qrels]
        self.qrels = qrels
        if not self.corpus:
            raise InputError("the corpus is empty")
        if not self.queries:
            raise InputError("no query has a relevant document in the corpus: check qrels.tsv's ids")

    @property
    def has_vectors(self) -> bool:
        """Every document and query carries a precomputed vector (no embedder needed)."""
        return all("vector" in d for d in self.corpus) and all("vector" in q for q in self.queries)

    def document_item(self, doc: Mapping[str, Any]) -> Any:
        """What the embedder and the reranker read for a document: its text, media or both."""
        return _item(doc)

    def query_item(self, query: Mapping[str, Any]) -> Any:
        """What the embedder and the reranker read for a query."""
        return _item(query)

    def vectors(self, which: str) -> np.ndarray | None:
        """The precomputed vectors of the ``"corpus"`` or the ``"queries"`` (None if any is missing)."""
        rows = self.corpus if which == "corpus" else self.queries
        if not all("vector" in r for r in rows):
            return None
        out = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        if out.ndim != 2:
            raise InputError(f"the {which}' vectors do not all have the same length")
        return out


def _item(obj: Mapping[str, Any]) -> Any:
    item: dict[str, Any] = {}
    if obj.get("text") is not None:
        item["text"] = obj["text"]
    image = obj.get("image") if obj.get("image") is not None else obj.get("page")
    if image is not None:
        item["image"] = image
    if obj.get("video") is not None:
        item["video"] = obj["video"]
    if not item:
        return None
    return item["text"] if list(item) == ["text"] else item


def _checked(obj: Any, index: int, what: str) -> dict:
    if not isinstance(obj, Mapping):
        raise InputError(f"{what} {index}: expected a JSON object, got {type(obj).__name__}")
    out = dict(obj)
    if "id" not in out and "_id" in out:
        out["id"] = out.pop("_id")
    if out.get("id") in (None, ""):
        raise InputError(f"{what} {index}: it has no id")
    out["id"] = str(out["id"])
    if out.get("title") and isinstance(out.get("text"), str):  # BEIR: title and text
        out["text"] = f"{out.pop('title')}\n{out['text']}"
    if not any(out.get(k) is not None for k in CONTENT) and "vector" not in out:
        raise InputError(f"{what} {out['id']!r}: it has no text, image, video, page or vector")
    return out


def load_dataset(folder: str | pathlib.Path) -> Dataset:
    """Read a BEIR-style folder (see the module docstring).

    Raises:
        InputError: a file is missing or cannot be read (the message names the file and line).
    """
    root = pathlib.Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset {str(folder)!r} is not a folder (expected corpus.jsonl, queries.jsonl, qrels.tsv)")
    corpus = [_resolve_media(d, root) for d in _jsonl(root / "corpus.jsonl")]
    queries = [_resolve_media(q, root) for q in _jsonl(root / "queries.jsonl")]
    qrels_path = root / "qrels.tsv"
    if not qrels_path.is_file() and (root / "qrels" / "test.tsv").is_file():
        qrels_path = root / "qrels" / "test.tsv"
    qrels = read_qrels(qrels_path)
    return Dataset(corpus, queries, qrels, name=root.resolve().name)


def _jsonl(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not JSON: {exc}") from None
    return out


def read_qrels(path: pathlib.Path) -> dict[str, dict[str, int]]:
    """``{query id: {document id: relevance}}`` from a tab- (or space-) separated file."""
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if not any(parts):
                continue
            if len(parts) == 4:  # TREC form: query 0 document relevance
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise InputError(f"{path}:{n}: expected query-id, doc-id, relevance")
            try:
                rel = int(float(parts[2]))
            except ValueError:
                if n == 1:
                    continue  # a header line
                raise InputError(f"{path}:{n}: relevance {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = rel
    return qrels


def _resolve_media(obj: Any, root: pathlib.Path) -> Any:
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for key in MEDIA:
        value = out.get(key)
        if isinstance(value, str) and "://" not in value and not value.startswith("data:"):
            p = pathlib.Path(value).expanduser()
            out[key] = str(p if p.is_absolute() else (root / p).resolve())
    return out


def write_dataset(folder: str | pathlib.Path, corpus: Iterable[Mapping[str, Any]],
                  queries: Iterable[Mapping[str, Any]], qrels: Mapping[str, Mapping[str, int]]) -> pathlib.Path:
    """Write a set in the folder format (vectors as lists): for tests and for sets built in code."""
    root = pathlib.Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with (root / name).open("w", encoding="utf-8") as fh:
            for row in rows:
                row = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (root / "qrels.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, rel in docs.items():
                fh.write(f"{qid}\t{did}\t{rel}\n")
    return root
