"""``evaluate``: embed a labelled set once, then measure the grid on a database (see :mod:`.grid`)."""
from __future__ import annotations

import logging
import pathlib
import sys
import time
from typing import Any, Iterator, Sequence

import numpy as np

from embedder.errors import InputError, QVLError

from .dataset import MEDIA, Dataset, load_dataset
from .grid import GridSpec, RerankCache, Retrieval, ann_runs, exact_runs, make_spec, score_retrieval
from .report import EvalReport

log = logging.getLogger(__name__)

EMBED_BATCH = 32
_NOT_FIELDS = {"id", "text", "title", "vector", *MEDIA}


def evaluate(dataset: Dataset | str | pathlib.Path, target: str = "memory:", *, embedder: Any = None,
             reranker: Any = None, dims: Sequence[int] | None = None, precisions: Sequence[str] = ("float32",),
             exact: bool = True, ann: bool = True, ef: Sequence[int] | None = None,
             candidates: Sequence[int] | None = None, k: int = 10, tolerance: float = 0.01,
             collection: str = "qvl_eval", keep: bool = False, instruction: str | None = None,
             store_options: dict[str, Any] | None = None, show_progress: bool = False) -> EvalReport:
    """Measure recall, nDCG@10, MRR, top-1, latency and bytes per vector over a grid of settings.

    Args:
        dataset: a :class:`Dataset` or a BEIR-style folder (:func:`load_dataset`).
        target: the database the ANN runs search (``milvus:./eval.db``, ``postgresql://...``...);
            one collection per (dim, precision) is written there, named ``{collection}_{dim}_{precision}``
            (dropped first if it exists, and again at the end unless ``keep``).
        embedder: embeds the corpus (once, at its full dim) and the queries; not needed when every
            document and query carries a ``vector``.
        reranker: measure reranking too (needs query and document content, not only vectors).
        dims: MRL dims (default: 2048, 1024, ..., 64 up to the full dim).
        precisions: any of ``float32``, ``float16``, ``int8``, ``binary`` (the stores' ``quantization=``).
        exact: measure numpy exact search over the stored form.
        ann: measure the database's index (``ef``: search breadths to try; default the store's).
        candidates: rerank candidate counts (default with a reranker: the stores' ``max(4k, 20)``).
        k: the search depth of recall@k, MRR and top-1 (nDCG is at 10).
        tolerance: the recommendation is the smallest configuration within this of the best recall@k.
        store_options: more keyword arguments for ``connectors.connect`` (``index=``, ...).
        show_progress: progress bars on stderr (rate and ETA).

    Returns:
        An :class:`EvalReport` (``.table()``, ``.summary()``, ``.recommended``, ``.save_json(path)``,
        and :func:`connectors.eval.write_html`).

    Raises:
        InputError: a bad grid value, or a set that needs an embedder when none was given.
    """
    from connectors.search import default_rerank_candidates

    start = time.monotonic()
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise InputError(f"tolerance must be a number of at least 0, got {tolerance!r}")
    if reranker is not None and any(data.query_item(q) is None for q in data.queries):
        raise InputError("reranking needs each query's text or media; some queries carry only a vector")
    notes = list(data.problems)
    t0 = time.monotonic()
    corpus, queries = _vectors(data, embedder, instruction, show_progress, notes)
    embed_seconds = time.monotonic() - t0
    cands = list(candidates or ([default_rerank_candidates(k)] if reranker is not None else []))
    spec = make_spec(corpus.shape[1], dims=dims, precisions=precisions, exact=exact, ann=ann, efs=ef,
                     candidates=cands if reranker is not None else [], k=k,
                     min_dim=32 if embedder is None else getattr(embedder, "min_dim", None))  # 32: any Qwen3 model
    doc_ids = [d["id"] for d in data.corpus]
    qids = [q["id"] for q in data.queries]
    rerank = RerankCache(reranker, data) if reranker is not None else None
    per_run = len(qids) * (1 + len(spec.candidates))
    runs_per_pair = (1 if spec.exact else 0) + (len(spec.efs) if spec.ann else 0)
    bar = _bar(len(spec.dims) * len(spec.precisions) * runs_per_pair * per_run, "searching", show_progress)
    tick = bar.update
    results, done = [], 0
    try:
        from embedder.embedder import mrl

        for dim in spec.dims:
            cvec, qvec = mrl(corpus, dim), mrl(queries, dim)
            for precision in spec.precisions:
                runs: list[Retrieval] = []
                if spec.exact:
                    runs.append(exact_runs(spec, dim, precision, doc_ids, cvec, qids, qvec, tick))
                if spec.ann:
                    got = _database_runs(spec, data, target, collection, dim, precision, cvec, qids, qvec, tick,
                                         notes, keep, store_options or {}, show_progress)
                    runs += got
                for run in runs:
                    results += score_retrieval(run, spec, data, rerank, tick)
                done += runs_per_pair * per_run  # runs left out count as done
                bar.update(max(0, done - bar.n))
    finally:
        bar.close()
    model = None if embedder is None or data.has_vectors else str(getattr(embedder, "name", None) or embedder)
    return EvalReport(dataset=data.name, target=target if spec.ann else "(exact only)", model=model,
                      reranker=str(getattr(reranker, "name", None) or reranker) if reranker is not None else None,
                      k=spec.k, tolerance=float(tolerance), documents=len(doc_ids), queries=len(qids),
                      full_dim=int(corpus.shape[1]), results=results, notes=list(dict.fromkeys(notes)),
                      embed_seconds=round(embed_seconds, 3), elapsed=round(time.monotonic() - start, 3))


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="query", file=sys.stderr, disable=None if enabled else True,
                dynamic_ncols=True, smoothing=0.1)


def _vectors(data: Dataset, embedder: Any, instruction: str | None, show_progress: bool,
             notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The corpus' and the queries' vectors at the full dim: given, or embedded once."""
    corpus, queries = data.vectors("corpus"), data.vectors("queries")
    if corpus is not None and queries is not None:
        if corpus.shape[1] != queries.shape[1]:
            raise InputError(f"the documents' vectors have {corpus.shape[1]} dims, the queries' {queries.shape[1]}")
        return _unit(corpus), _unit(queries)
    if embedder is None:
        raise InputError("the set's documents and queries need embedding: give a model (an embedder)")
    full = int(embedder.dim)
    items = [data.document_item(d) for d in data.corpus]
    bar = _bar(len(items) + len(data.queries), "embedding", show_progress)
    try:
        parts, failed = [], []
        for s in range(0, len(items), EMBED_BATCH):
            result = embedder.embed_documents(items[s:s + EMBED_BATCH], dim=full, on_error="skip")
            vec = np.zeros((len(items[s:s + EMBED_BATCH]), full), dtype=np.float32)
            vec[np.asarray(result.indices, dtype=int)] = result.vectors
            failed += [(s + i, reason) for i, reason in result.errors]
            parts.append(vec)
            bar.update(len(vec))
        corpus = np.concatenate(parts)
        if failed:
            bad = {data.corpus[i]["id"] for i, _ in failed}
            notes.append(f"{len(failed)} document(s) could not be embedded and are left out "
                         f"(first: {data.corpus[failed[0][0]]['id']!r}: {failed[0][1]})")
            keep = [i for i, d in enumerate(data.corpus) if d["id"] not in bad]
            data.corpus = [data.corpus[i] for i in keep]
            corpus = corpus[keep]
        qitems = [data.query_item(q) for q in data.queries]
        qparts = []
        for s in range(0, len(qitems), EMBED_BATCH):
            qparts.append(embedder.embed_queries(qitems[s:s + EMBED_BATCH], dim=full, instruction=instruction))
            bar.update(len(qitems[s:s + EMBED_BATCH]))
        queries = np.concatenate(qparts)
    finally:
        bar.close()
    return corpus, queries


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise InputError("a precomputed vector is all zeros")
    return (x / norms).astype(np.float32)


def _rows(data: Dataset, vectors: np.ndarray) -> Iterator[dict]:
    """The rows written to the database: id, vector, the content reference and the fields."""
    for doc, vec in zip(data.corpus, vectors):
        row: dict[str, Any] = {"id": doc["id"], "vector": vec}
        if isinstance(doc.get("text"), str):
            row["text"] = doc["text"]
        media = doc.get("image") or doc.get("page")
        if isinstance(media, str):
            row["image"] = media
        elif isinstance(doc.get("video"), str):
            row["video"] = doc["video"]
        extra = {k: v for k, v in doc.items() if k not in _NOT_FIELDS}
        if extra:
            row["metadata"] = extra
        yield row


def _database_runs(spec: GridSpec, data: Dataset, target: str, collection: str, dim: int, precision: str,
                   cvec: np.ndarray, qids: list[str], qvec: np.ndarray, tick: Any, notes: list[str], keep: bool,
                   options: dict[str, Any], show_progress: bool) -> list[Retrieval]:
    """Write the corpus at (dim, precision) into the target and search it with the database's index."""
    import connectors
    from connectors.quantization import QuantizationUnsupportedError

    name = f"{collection}_{dim}_{precision}"
    try:
        store = connectors.connect(target, collection=name, dim=dim, quantization=precision, **options)
    except QuantizationUnsupportedError as exc:
        notes.append(f"{dim} {precision} ann: left out: {exc}")
        return []
    try:
        store.drop()
        try:
            store.create()
        except QuantizationUnsupportedError as exc:
            notes.append(f"{dim} {precision} ann: left out: {exc}")
            return []
        try:
            report = store.upsert(_rows(data, cvec), batch_size=1024,
                                  show_progress=show_progress and sys.stderr.isatty())
            if report.failed:
                raise QVLError(f"{len(report.failed)} row(s) could not be written, first: {report.failed[0]}")
            refresh = getattr(store, "refresh_index", None)
            if callable(refresh):
                refresh()
        except QVLError as exc:  # one configuration's failure does not end a long run
            notes.append(f"{dim} {precision} ann: failed, left out: writing to {target} collection {name!r}: "
                         f"{' '.join(str(exc).split())}")
            log.warning("%s", notes[-1])
            return []
        log.info("wrote %d rows to %s collection %s", len(report.written), target, name)
        return ann_runs(spec, store, dim, precision, qids, qvec, tick, notes)
    finally:
        try:
            if not keep:
                store.drop()
        finally:
            store.close()
