"""An evaluation's outcome: the results of every configuration, the recommendation, a terminal
table and the JSON form (what ``--json`` writes and ``--compare`` reads)."""
from __future__ import annotations

import datetime as _dt
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from embedder.errors import InputError

from .grid import ConfigResult

FORMAT = "qvl-eval/1"


@dataclass
class EvalReport:
    """What :func:`connectors.eval.evaluate` measured.

    Attributes:
        dataset: the set's name; target: where the ANN runs searched.
        model, reranker: the models' names (None: precomputed vectors / no reranking).
        k: the search depth of the metrics; tolerance: how much recall@k the recommendation may give up.
        documents, queries: how many were evaluated; full_dim: the vectors' full dim.
        results: one :class:`ConfigResult` per configuration.
        notes: what was left out and why (a precision a store cannot honour, an option it lacks...).
        embed_seconds: time to embed the corpus and the queries; elapsed: the whole run.
    """

    dataset: str
    target: str
    model: str | None
    reranker: str | None
    k: int
    tolerance: float
    documents: int
    queries: int
    full_dim: int
    results: list[ConfigResult]
    notes: list[str] = field(default_factory=list)
    embed_seconds: float = 0.0
    elapsed: float = 0.0
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def metric(self) -> str:
        """The metric the recommendation is made on: ``recall@k``."""
        return f"recall@{self.k}"

    def result(self, label: str) -> ConfigResult | None:
        """The result of the configuration with this label, or None."""
        return next((r for r in self.results if r.label == label), None)

    @property
    def best(self) -> ConfigResult | None:
        """The configuration with the highest recall@k (the faster one on a tie)."""
        if not self.results:
            return None
        return max(self.results, key=lambda r: (r.metrics[self.metric], -r.total_ms["p50"]))

    @property
    def recommended(self) -> ConfigResult | None:
        """The smallest configuration within ``tolerance`` of the best recall@k: fewest bytes a
        vector, then no reranking, then the lowest p50 latency."""
        return recommend(self.results, self.metric, self.tolerance)

    def to_dict(self) -> dict:
        rec = self.recommended
        return {"format": FORMAT, "dataset": self.dataset, "target": self.target, "model": self.model,
                "reranker": self.reranker, "k": self.k, "tolerance": self.tolerance,
                "documents": self.documents, "queries": self.queries, "full_dim": self.full_dim,
                "created": self.created, "embed_seconds": self.embed_seconds, "elapsed": self.elapsed,
                "notes": list(self.notes), "recommended": rec.label if rec else None,
                "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalReport":
        if d.get("format") != FORMAT:
            raise InputError(f"not a qvl eval report (format {d.get('format')!r}, expected {FORMAT!r})")
        keys = ("dataset", "target", "model", "reranker", "k", "tolerance", "documents", "queries", "full_dim",
                "notes", "embed_seconds", "elapsed", "created")
        return cls(**{k: d[k] for k in keys if k in d}, results=[ConfigResult.from_dict(r) for r in d["results"]])

    def save_json(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load_json(cls, path: str | pathlib.Path) -> "EvalReport":
        """Read a report written by ``--json``.

        Raises:
            InputError: the file cannot be read or is not a report.
        """
        try:
            data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the report {str(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{str(path)!r} is not a qvl eval report")
        return cls.from_dict(data)

    def table(self) -> str:
        """The terminal table: one line per configuration, best recall first, the recommendation marked."""
        return format_table(self)

    def summary(self) -> str:
        """The last lines a person reads: the best, the recommendation and why."""
        best, rec = self.best, self.recommended
        if best is None or rec is None:
            return "nothing was measured"
        m = self.metric
        lines = [f"best {m}: {best.metrics[m]:.3f} ({best.label}, {best.bytes_per_vector} bytes/vector, "
                 f"p50 {best.total_ms['p50']:.1f} ms)",
                 f"recommended: {rec.label}: {m} {rec.metrics[m]:.3f} (within {self.tolerance:g} of the best), "
                 f"{rec.bytes_per_vector} bytes/vector ({_ratio(best, rec)}), p50 {rec.total_ms['p50']:.1f} ms, "
                 f"p95 {rec.total_ms['p95']:.1f} ms"]
        return "\n".join(lines)


def _ratio(best: ConfigResult, rec: ConfigResult) -> str:
    if rec.bytes_per_vector >= best.bytes_per_vector:
        return "as large as the best"
    return f"{best.bytes_per_vector / rec.bytes_per_vector:g}x smaller than the best"


def recommend(results: list[ConfigResult], metric: str, tolerance: float) -> ConfigResult | None:
    """The smallest configuration whose ``metric`` is within ``tolerance`` of the best one's.

    Smallest: fewest bytes a vector; then without reranking; then the lowest p50 latency.
    """
    if not results:
        return None
    top = max(r.metrics[metric] for r in results)
    near = [r for r in results if r.metrics[metric] >= top - tolerance - 1e-12]
    return min(near, key=lambda r: (r.bytes_per_vector, r.config.rerank > 0, r.total_ms["p50"]))


def format_table(report: EvalReport) -> str:
    m = report.metric
    rec = report.recommended
    headers = ["config", m, "nDCG@10", "MRR", "top-1", "bytes/vec", "search p50 ms", "p95 ms", "rerank p50 ms",
               "total p50 ms"]
    rows = []
    for r in sorted(report.results, key=lambda r: (-r.metrics[m], r.bytes_per_vector, r.total_ms["p50"])):
        rows.append([("* " if rec is r else "  ") + r.label, f"{r.metrics[m]:.3f}", f"{r.metrics['ndcg@10']:.3f}",
                     f"{r.metrics['mrr']:.3f}", f"{r.metrics['top1']:.3f}", str(r.bytes_per_vector),
                     f"{r.search_ms['p50']:.2f}", f"{r.search_ms['p95']:.2f}",
                     f"{r.rerank_ms['p50']:.1f}" if r.rerank_ms else "-", f"{r.total_ms['p50']:.2f}"])
    head = (f"{report.dataset}: {report.documents} documents, {report.queries} queries, k={report.k}; "
            f"target {report.target}; model {report.model or 'precomputed vectors'}"
            + (f"; reranker {report.reranker}" if report.reranker else ""))
    return "\n".join([head, "", text_table(headers, rows), "", "* recommended", *(f"note: {n}" for n in report.notes)])


def text_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned table (numbers right-aligned)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: list[str], header: bool = False) -> str:
        out = []
        for i, (v, w) in enumerate(zip(values, widths)):
            out.append(v.ljust(w) if i == 0 or header else v.rjust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers, True), line(["-" * w for w in widths], True), *(line(r) for r in cells)])
