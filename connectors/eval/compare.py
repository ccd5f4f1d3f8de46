"""``qvl eval --compare A.json B.json``: did a change help, query by query.

Two reports (another model, another instruction, another dim...) are compared on one
configuration present in both (default: A's recommended one, else the first they share):
each query's metric in A and in B, which queries got better or worse and by how much, and a
summary (means, how many better / worse / unchanged). Every configuration they share is
listed too, with its mean in A and in B.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import numpy as np

from embedder.errors import InputError

from .report import EvalReport, text_table


@dataclass
class Comparison:
    """Two reports on one configuration.

    Attributes:
        config: the configuration's label; metric: what is compared.
        a, b: the reports' names (their file names).
        per_query: ``(query id, value in A, value in B)`` for the queries in both.
        configs: ``(label, mean in A, mean in B)`` for every configuration in both.
        only_a, only_b: queries in one report only.
    """

    config: str
    metric: str
    a: str
    b: str
    per_query: list[tuple[str, float, float]]
    configs: list[tuple[str, float, float]] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    @property
    def better(self) -> list[tuple[str, float, float]]:
        """Queries B does better on, most improved first."""
        return sorted((p for p in self.per_query if p[2] > p[1] + 1e-12), key=lambda p: p[1] - p[2])

    @property
    def worse(self) -> list[tuple[str, float, float]]:
        """Queries B does worse on, most degraded first."""
        return sorted((p for p in self.per_query if p[2] < p[1] - 1e-12), key=lambda p: p[2] - p[1])

    @property
    def mean_a(self) -> float:
        return float(np.mean([p[1] for p in self.per_query])) if self.per_query else 0.0

    @property
    def mean_b(self) -> float:
        return float(np.mean([p[2] for p in self.per_query])) if self.per_query else 0.0

    def to_dict(self) -> dict:
        return {"config": self.config, "metric": self.metric, "a": self.a, "b": self.b,
                "mean_a": self.mean_a, "mean_b": self.mean_b, "delta": self.mean_b - self.mean_a,
                "better": [{"query": q, "a": x, "b": y, "delta": y - x} for q, x, y in self.better],
                "worse": [{"query": q, "a": x, "b": y, "delta": y - x} for q, x, y in self.worse],
                "unchanged": len(self.per_query) - len(self.better) - len(self.worse),
                "configs": [{"config": c, "a": x, "b": y, "delta": y - x} for c, x, y in self.configs],
                "only_a": self.only_a, "only_b": self.only_b}

    def format(self, limit: int = 20) -> str:
        """For the terminal: the per-query changes (the largest ``limit`` each way), then the summary."""
        lines = [f"A = {self.a}", f"B = {self.b}", f"configuration {self.config!r}, {self.metric} per query", ""]
        for title, rows in (("better in B", self.better), ("worse in B", self.worse)):
            lines.append(f"{title}: {len(rows)}")
            if rows:
                shown = [[q, f"{x:.3f}", f"{y:.3f}", f"{y - x:+.3f}"] for q, x, y in rows[:limit]]
                lines += ["  " + line for line in text_table(["query", "A", "B", "change"], shown).splitlines()]
                if len(rows) > limit:
                    lines.append(f"  ... and {len(rows) - limit} more")
            lines.append("")
        if self.configs:
            table = [[c, f"{x:.3f}", f"{y:.3f}", f"{y - x:+.3f}"] for c, x, y in self.configs]
            lines += [f"every configuration in both, mean {self.metric}:",
                      *("  " + line for line in text_table(["configuration", "A", "B", "change"], table).splitlines()),
                      ""]
        if self.only_a or self.only_b:
            lines.append(f"queries only in A: {len(self.only_a)}, only in B: {len(self.only_b)} (not compared)")
        unchanged = len(self.per_query) - len(self.better) - len(self.worse)
        lines.append(f"summary: {self.metric} {self.mean_a:.3f} -> {self.mean_b:.3f} ({self.mean_b - self.mean_a:+.3f}) "
                     f"over {len(self.per_query)} queries: {len(self.better)} better, {len(self.worse)} worse, "
                     f"{unchanged} unchanged")
        return "\n".join(lines)


def compare(a: EvalReport | str | pathlib.Path, b: EvalReport | str | pathlib.Path, *, config: str | None = None,
            config_b: str | None = None, metric: str | None = None) -> Comparison:
    """Compare two reports (or ``--json`` files) query by query.

    Args:
        config: the configuration's label (as in the table, e.g. ``"256 int8 exact"``); default:
            A's recommended configuration if B has it, else the first configuration both have; when
            they share none (another dim), each report's recommended configuration.
        config_b: B's configuration when it is not ``config`` (e.g. ``"128 int8 exact"`` against
            ``"256 int8 exact"``).
        metric: ``recall@k`` (default, A's k), ``ndcg@10``, ``mrr`` or ``top1``.

    Raises:
        InputError: the reports share no configuration, or do not have the one or the metric asked for.
    """
    name_a = str(a) if not isinstance(a, EvalReport) else f"{a.dataset} ({a.created})"
    name_b = str(b) if not isinstance(b, EvalReport) else f"{b.dataset} ({b.created})"
    ra = a if isinstance(a, EvalReport) else EvalReport.load_json(a)
    rb = b if isinstance(b, EvalReport) else EvalReport.load_json(b)
    labels_b = {r.label for r in rb.results}
    shared = [r.label for r in ra.results if r.label in labels_b]
    rec_a, rec_b = ra.recommended, rb.recommended
    if config is None:
        if rec_a is not None and rec_a.label in labels_b:
            config = rec_a.label
        elif shared:
            config = shared[0]
        elif rec_a is not None and rec_b is not None:
            config, config_b = rec_a.label, config_b or rec_b.label
        else:
            raise InputError("a report has no results")
    config_b = config_b or config
    ca, cb = ra.result(config), rb.result(config_b)
    if ca is None or cb is None:
        missing = f"{config!r} is not in A" if ca is None else f"{config_b!r} is not in B"
        raise InputError(f"configuration {missing}; A has: {', '.join(r.label for r in ra.results)}; "
                         f"B has: {', '.join(r.label for r in rb.results)}")
    metric = metric or ra.metric
    if metric not in ca.metrics or metric not in cb.metrics:
        raise InputError(f"metric {metric!r} is not in both reports; choose from {sorted(set(ca.metrics) & set(cb.metrics))}")
    qa, qb = ca.per_query, cb.per_query
    per_query = [(q, float(qa[q][metric]), float(qb[q][metric])) for q in qa if q in qb]
    configs = [(lab, ra.result(lab).metrics[metric], rb.result(lab).metrics[metric])  # type: ignore[union-attr]
               for lab in shared if metric in ra.result(lab).metrics and metric in rb.result(lab).metrics]  # type: ignore[union-attr]
    label = config if config_b == config else f"{config} (A) against {config_b} (B)"
    return Comparison(label, metric, name_a, name_b, per_query, configs,
                      only_a=sorted(set(qa) - set(qb)), only_b=sorted(set(qb) - set(qa)))
