"""The grid ``qvl eval`` measures: dimension x precision x index x reranking.

The corpus and the queries are embedded once at the full dim; each MRL dim is the prefix,
L2-normalised again (:func:`embedder.embedder.mrl`, what the embedder itself does). For each
(dim, precision) the corpus is written once into a collection of the target, with the store's
``quantization=`` option, and searched:

* ``exact``: numpy over the same stored form (:func:`connectors.quantization.reference_search`:
  float32/float16/int8 exactly, binary by Hamming distance then float re-scoring), timed per query;
* ``ann``: the database's own index (``store.search`` with the query vector), at the store's
  default search breadth or at each ``ef`` given (the store's own option: Milvus ``ef`` /
  ``nprobe``, pgvector ``ef_search``, Qdrant ``hnsw_ef``, Faiss ``ef_search``; Weaviate's ``ef`` is a
  collection setting, updated before that setting's searches), timed per query.

Each of those runs is then scored as it is and, with a reranker, after reranking its best
``candidates`` hits for each candidate count. The reranker's scores of a (query, document)
pair are cached across configurations (the score does not depend on which index found the
document); the rerank time of a query at a candidate count is measured once, on the first
configuration that reranks it, as one call over all its candidates, and reported for every
configuration at that count.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from embedder.errors import InputError

from .dataset import Dataset
from .metrics import mean_metrics, per_query_metrics, percentiles

log = logging.getLogger(__name__)

MRL_DIMS = (2048, 1024, 512, 256, 128, 64)
#: search options that set an ANN index's search breadth, per store backend
_EF_OPTION: dict[str, Callable[[Any, int], dict[str, Any]]] = {
    "milvus": lambda store, ef: ({"search_params": {"nprobe": ef}}
                                 if str(getattr(store, "index", "")).upper().startswith("IVF")
                                 else {"search_params": {"ef": ef}}),
    "pgvector": lambda store, ef: {"ef_search": ef},
    "qdrant": lambda store, ef: {"hnsw_ef": ef},
    "faiss": lambda store, ef: ({"nprobe": ef} if "ivf" in str(getattr(store, "index_kind", "")).lower()
                                else {"ef_search": ef}),
    "weaviate": lambda store, ef: {_SETUP: lambda: _weaviate_ef(store, ef)},
}
_SETUP = "__setup__"  # a step to run before the searches of this setting (not a search option)


def _weaviate_ef(store: Any, ef: int) -> None:
    """Weaviate's HNSW ``ef`` is a collection setting: set it on every named vector (it applies at once)."""
    from weaviate.classes.config import Reconfigure

    store.weaviate_collection.config.update(vector_config=[
        Reconfigure.Vectors.update(name=name, vector_index_config=Reconfigure.VectorIndex.hnsw(ef=ef))
        for name in store.named_vectors])


@dataclass(frozen=True)
class Config:
    """One point of the grid.

    Attributes:
        dim: the MRL dim.
        precision: ``float32``, ``float16``, ``int8`` or ``binary``.
        index: ``exact`` (numpy over the stored form) or ``ann`` (the database's index).
        ef: the ANN search breadth (None: the store's default; always None for exact).
        rerank: the number of candidates reranked (0: no reranking).
    """

    dim: int
    precision: str
    index: str
    ef: int | None = None
    rerank: int = 0

    @property
    def label(self) -> str:
        """``256 int8 ann ef=64 +rerank 40``: how tables, plots and ``--compare`` name it."""
        index = self.index if self.ef is None else f"{self.index} ef={self.ef}"
        return f"{self.dim} {self.precision} {index}" + (f" +rerank {self.rerank}" if self.rerank else "")


@dataclass
class ConfigResult:
    """What one configuration measured.

    Attributes:
        config: the configuration.
        metrics: the mean of each metric over the queries.
        per_query: ``{query id: {metric: value}}``.
        ranked: ``{query id: [document ids, best first]}`` (the top k).
        search_ms: p50/p95 of one query's search (numpy for exact, the database for ann).
        rerank_ms: p50/p95 of one query's reranking (None without reranking).
        total_ms: p50/p95 of search plus rerank, per query.
        bytes_per_vector: the index entry's bytes (:func:`connectors.quantization.bytes_per_vector`).
    """

    config: Config
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    ranked: dict[str, list[str]]
    search_ms: dict[str, float]
    rerank_ms: dict[str, float] | None
    total_ms: dict[str, float]
    bytes_per_vector: int

    @property
    def label(self) -> str:
        return self.config.label

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label"] = self.label
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ConfigResult":
        d = dict(d)
        d.pop("label", None)
        d["config"] = Config(**d["config"])
        return cls(**d)


@dataclass
class Retrieval:
    """One search run of every query at one (dim, precision, index, ef): ids best first and times."""

    config: Config
    ranked: dict[str, list[str]]
    seconds: list[float]


@dataclass
class GridSpec:
    """What to measure (checked by :func:`make_spec`)."""

    dims: list[int]
    precisions: list[str]
    exact: bool = True
    ann: bool = True
    efs: list[int | None] = field(default_factory=lambda: [None])
    candidates: list[int] = field(default_factory=list)
    k: int = 10

    @property
    def depth(self) -> int:
        """How many hits each search asks for: k, or the largest candidate count."""
        return max([self.k, *self.candidates])


def make_spec(full_dim: int, *, dims: Sequence[int] | None, precisions: Sequence[str], exact: bool, ann: bool,
              efs: Sequence[int] | None, candidates: Sequence[int], k: int, min_dim: int | None = None) -> GridSpec:
    """The grid, checked: dims from ``min_dim`` (the model's smallest: 64 for Qwen3-VL, 32 for the
    text models; default 64) to the full dim (default: the MRL ladder up to it),
    known precisions, at least one index, candidate counts of at least k.

    Raises:
        InputError: a value out of range (the message says which).
    """
    from embedder.contracts import MIN_DIM

    from connectors.quantization import check_precision

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    wanted = list(dims) if dims else [d for d in MRL_DIMS if d <= full_dim] or [full_dim]
    if not dims and full_dim not in wanted:
        wanted.insert(0, full_dim)
    for d in wanted:
        low = min_dim or MIN_DIM
        if isinstance(d, bool) or not isinstance(d, int) or not low <= d <= full_dim:
            raise InputError(f"dim {d!r}: the dims must be integers from {low} to {full_dim} (the full dim)")
    precs = list(dict.fromkeys(check_precision(p) for p in precisions)) or ["float32"]
    if not (exact or ann):
        raise InputError("nothing to measure: choose the exact search, the database's index, or both")
    for c in candidates:
        if isinstance(c, bool) or not isinstance(c, int) or c < k:
            raise InputError(f"rerank candidates {c!r}: each must be an integer of at least k={k}")
    ef_list: list[int | None] = list(dict.fromkeys(efs)) if efs else [None]
    for e in ef_list:
        if e is not None and (isinstance(e, bool) or not isinstance(e, int) or e < 1):
            raise InputError(f"ef {e!r} must be a positive integer")
    return GridSpec(sorted(set(wanted), reverse=True), precs, exact, ann, ef_list,
                    sorted(set(int(c) for c in candidates)), k)


# ---------------------------------------------------------------------------- searching
def exact_runs(spec: GridSpec, dim: int, precision: str, doc_ids: list[str], corpus: np.ndarray,
               qids: list[str], queries: np.ndarray, tick: Callable[[int], None]) -> Retrieval:
    """numpy over the stored form, per query (what :func:`connectors.quantization.reference_search`
    computes, with the decoded vectors normalised once rather than per query)."""
    searcher = ExactSearch(corpus, precision)
    n = min(spec.depth, len(doc_ids))
    ranked, seconds = {}, []
    for qid, q in zip(qids, queries):
        t = time.perf_counter()
        order = searcher.top(q, n)
        seconds.append(time.perf_counter() - t)
        ranked[qid] = [doc_ids[i] for i in order]
        tick(1)
    return Retrieval(Config(dim, precision, "exact"), ranked, seconds)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


class ExactSearch:
    """Exact top-n over one precision's stored form: cosine to the decoded vectors (float32,
    float16, int8), or Hamming distance on the sign bits and then the float cosine of the best
    ``RESCORE_OVERSAMPLING * n`` (binary), as :func:`connectors.quantization.reference_search`."""

    def __init__(self, vectors: np.ndarray, precision: str) -> None:
        from connectors.quantization import encode

        self.precision = precision
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        stored = encode(self.vectors, precision)
        if precision == "binary":
            self.bits = stored
        else:
            decoded = stored.astype(np.float32)
            norms = np.linalg.norm(decoded, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            self.decoded = decoded / norms

    @staticmethod
    def _best(scores: np.ndarray, n: int) -> np.ndarray:
        """Indices of the ``n`` highest scores, best first, ties in row order."""
        if n < len(scores):
            kth = np.partition(scores, len(scores) - n)[len(scores) - n]
            part = np.flatnonzero(scores >= kth)  # every tie at the boundary, so the lowest rows win as in a stable sort
            return part[np.lexsort((part, -scores[part]))][:n]
        return np.argsort(-scores, kind="stable")

    def top(self, query: np.ndarray, n: int) -> np.ndarray:
        from connectors.quantization import RESCORE_OVERSAMPLING

        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / (np.linalg.norm(q) or 1.0)
        if self.precision != "binary":
            return self._best(self.decoded @ q, n)
        qbits = np.packbits(q > 0)
        hamming = _POPCOUNT[np.bitwise_xor(self.bits, qbits)].sum(axis=1, dtype=np.int64)
        candidates = self._best(-hamming.astype(np.float64), RESCORE_OVERSAMPLING * n)
        exact = self.vectors[candidates] @ q
        return candidates[self._best(exact, n)]


def ann_options(store: Any, ef: int | None) -> dict[str, Any] | None:
    """The search keywords that set the ANN search breadth to ``ef`` on this store ({} for the
    default; None when the store has no such option)."""
    if ef is None:
        return {}
    make = _EF_OPTION.get(getattr(store, "backend", ""))
    return make(store, ef) if make else None


def ann_runs(spec: GridSpec, store: Any, dim: int, precision: str, qids: list[str], queries: np.ndarray,
             tick: Callable[[int], None], notes: list[str]) -> list[Retrieval]:
    """The database's own index: ``store.search(vector, k=depth, **options)`` per query and ef."""
    n = spec.depth
    if store.max_k:
        n = min(n, store.max_k)
    settings: dict[int | None, dict[str, Any]] = {}
    for ef in spec.efs:
        options = ann_options(store, ef)
        if options is None:
            notes.append(f"{store.backend} has no per-search index breadth: ef={ef} is left out, its "
                         "default is measured")
            settings.setdefault(None, {})
        else:
            settings[ef] = options
    out = []
    for ef, options in settings.items():
        ranked, seconds = {}, []
        options = dict(options)
        try:
            setup = options.pop(_SETUP, None)
            if setup is not None:
                setup()
            for qid, q in zip(qids, queries):
                t = time.perf_counter()
                hits = store.search(q, k=n, **options)
                seconds.append(time.perf_counter() - t)
                ranked[qid] = [h.id for h in hits]
                tick(1)
        except Exception as exc:  # noqa: BLE001 - one setting's failure (a driver's error too) does not end the run
            notes.append(f"{dim} {precision} ann{'' if ef is None else f' ef={ef}'}: failed, left out: "
                         f"searching: {' '.join(str(exc).split())}")
            continue
        out.append(Retrieval(Config(dim, precision, "ann", ef), ranked, seconds))
    return out


# ---------------------------------------------------------------------------- reranking
class RerankCache:
    """Reranker scores of (query, document) pairs, and the measured rerank time of (query, count)."""

    def __init__(self, reranker: Any, dataset: Dataset) -> None:
        self.reranker = reranker
        self.queries = {q["id"]: dataset.query_item(q) for q in dataset.queries}
        self.docs = {d["id"]: dataset.document_item(d) for d in dataset.corpus}
        self.scores: dict[tuple[str, str], float] = {}
        self.seconds: dict[tuple[str, int], float] = {}
        self.failed: dict[tuple[str, str], str] = {}

    def rerank(self, qid: str, ids: list[str], k: int) -> list[str]:
        """``ids`` (vector order) reranked, best first, top ``k``; a document the reranker cannot
        read keeps its vector rank after the reranked ones (the stores' policy)."""
        key = (qid, len(ids))
        todo = ids if key not in self.seconds else [d for d in ids if (qid, d) not in self.scores]
        if todo:
            docs = [self.docs[d] for d in todo]
            t = time.perf_counter()
            result = self.reranker.score(self.queries[qid], docs, on_error="skip")
            elapsed = time.perf_counter() - t
            scores = result.scores if hasattr(result, "scores") else np.asarray(result)
            errors = dict(getattr(result, "errors", []))
            for i, d in enumerate(todo):
                if i in errors or not np.isfinite(scores[i]):
                    self.failed[(qid, d)] = errors.get(i, "no score")
                    self.scores[(qid, d)] = float("nan")
                else:
                    self.scores[(qid, d)] = float(scores[i])
            self.seconds.setdefault(key, elapsed)
        good = [i for i, d in enumerate(ids) if np.isfinite(self.scores[(qid, d)])]
        good.sort(key=lambda i: (-self.scores[(qid, ids[i])], i))
        reranked = set(good)
        order = good + [i for i in range(len(ids)) if i not in reranked]
        return [ids[i] for i in order[:k]]


def score_retrieval(run: Retrieval, spec: GridSpec, dataset: Dataset, rerank: RerankCache | None,
                    tick: Callable[[int], None]) -> list[ConfigResult]:
    """The configuration of ``run`` as it is, and with each rerank candidate count."""
    from connectors.quantization import bytes_per_vector

    k = spec.k
    size = bytes_per_vector(run.config.dim, run.config.precision)
    search = percentiles(run.seconds)
    plain = {q: ids[:k] for q, ids in run.ranked.items()}
    per_query = per_query_metrics(dataset.qrels, plain, k)
    out = [ConfigResult(run.config, mean_metrics(per_query), per_query, plain, search, None, search, size)]
    if rerank is None:
        return out
    qids = list(run.ranked)
    for c in spec.candidates:
        ranked = {}
        for q in qids:
            ranked[q] = rerank.rerank(q, run.ranked[q][:c], k)
            tick(1)
        per_query = per_query_metrics(dataset.qrels, ranked, k)
        rr = [rerank.seconds[(q, min(c, len(run.ranked[q])))] for q in qids]
        total = [s + r for s, r in zip(run.seconds, rr)]
        cfg = Config(run.config.dim, run.config.precision, run.config.index, run.config.ef, c)
        out.append(ConfigResult(cfg, mean_metrics(per_query), per_query, ranked, search, percentiles(rr),
                                percentiles(total), size))
    return out
