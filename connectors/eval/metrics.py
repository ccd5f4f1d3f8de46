"""Ranking metrics (computed by pytrec_eval, trec_eval's own code) and latency percentiles.

Our ranked lists are handed to pytrec_eval with strictly decreasing scores (the rank), so
its tie-breaking can never reorder what the database returned.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from connectors.core import import_optional


def measure_names(k: int) -> dict[str, str]:
    """Report name -> pytrec_eval result key, for a search depth ``k``."""
    return {f"recall@{k}": f"recall_{k}", "ndcg@10": "ndcg_cut_10", "mrr": "recip_rank", "top1": "P_1"}


def per_query_metrics(qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, Sequence[str]],
                      k: int) -> dict[str, dict[str, float]]:
    """``{query id: {metric: value}}`` for ranked lists of document ids (best first, cut at ``k``).

    Metrics: ``recall@k``, ``ndcg@10``, ``mrr`` (reciprocal rank of the first relevant document
    within the top ``k``) and ``top1`` (is the first hit relevant: precision at 1). A query with
    an empty list scores 0 everywhere.
    """
    pytrec_eval = import_optional("pytrec_eval", package="pytrec-eval-terrier", extra="eval",
                                  purpose="the metrics of qvl eval")
    names = measure_names(k)
    qrels = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    run = {q: {d: float(len(ids) - i) for i, d in enumerate(list(dict.fromkeys(ids))[:k])}
           for q, ids in ranked.items() if q in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"recall.{k}", "ndcg_cut.10", "recip_rank", "P.1"})
    scored = evaluator.evaluate({q: docs for q, docs in run.items() if docs})
    out = {}
    for q in qrels:
        got = scored.get(q)
        out[q] = {name: float(got[key]) if got else 0.0 for name, key in names.items()}
    return out


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over the queries."""
    if not per_query:
        return {}
    names = list(next(iter(per_query.values())))
    return {n: float(np.mean([m[n] for m in per_query.values()])) for n in names}


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """``{"p50": ms, "p95": ms}`` of per-query times given in seconds (empty: zeros)."""
    if not len(seconds):
        return {"p50": 0.0, "p95": 0.0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}
