"""The HTML report: the recommendation, two plots (PNG, matplotlib) and the table.

``write_html(report, "eval.html")`` writes ``eval.html`` and, next to it, ``eval-recall-bytes.png``
(recall@k against bytes per vector, log scale) and ``eval-recall-latency.png`` (recall@k against
p50 latency per query, search plus rerank), referenced by relative paths.
"""
from __future__ import annotations

import html
import pathlib

from .grid import ConfigResult
from .report import EvalReport

_COLOURS = {"float32": "#1f77b4", "float16": "#2ca02c", "int8": "#ff7f0e", "binary": "#d62728"}


def _plot(report: EvalReport, x_of: str, path: pathlib.Path) -> None:
    from connectors.core import import_optional

    matplotlib = import_optional("matplotlib", package="matplotlib", extra="eval", purpose="qvl eval's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - matplotlib.ticker below

    m = report.metric
    rec = report.recommended
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
    try:
        seen: set[tuple[str, str]] = set()
        for r in report.results:
            x = r.bytes_per_vector if x_of == "bytes" else r.total_ms["p50"]
            marker = "o" if r.config.index == "exact" else "s"
            hollow = r.config.rerank == 0
            key = (r.config.precision, marker + str(hollow))
            label = (f"{r.config.precision} {r.config.index}{' +rerank' if not hollow else ''}"
                     if key not in seen else None)
            seen.add(key)
            colour = _COLOURS.get(r.config.precision, "#555555")
            ax.scatter([x], [r.metrics[m]], marker=marker, s=46, label=label,
                       facecolors="none" if hollow else colour, edgecolors=colour, linewidths=1.4)
            ax.annotate(str(r.config.dim), (x, r.metrics[m]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if rec is not None:
            x = rec.bytes_per_vector if x_of == "bytes" else rec.total_ms["p50"]
            ax.scatter([x], [rec.metrics[m]], marker="*", s=220, c="gold", edgecolors="black", zorder=5,
                       label=f"recommended: {rec.label}")
        best = max(r.metrics[m] for r in report.results)
        ax.axhline(best - report.tolerance, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2 if x_of == "bytes" else 10)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("bytes per vector (log scale)" if x_of == "bytes" else "p50 latency per query, ms (log scale)")
        ax.set_ylabel(m)
        ax.set_title(f"{m} against {'storage' if x_of == 'bytes' else 'latency'}: {report.dataset} "
                     "(numbers: dims; dashed: best - tolerance)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def write_html(report: EvalReport, path: str | pathlib.Path) -> list[pathlib.Path]:
    """Write the HTML report and its two PNG plots; returns the three paths (HTML first)."""
    page = pathlib.Path(path)
    stem = page.with_suffix("")
    bytes_png = stem.parent / f"{stem.name}-recall-bytes.png"
    latency_png = stem.parent / f"{stem.name}-recall-latency.png"
    if report.results:
        _plot(report, "bytes", bytes_png)
        _plot(report, "latency", latency_png)
    page.write_text(render(report, bytes_png.name, latency_png.name), encoding="utf-8")
    return [page, bytes_png, latency_png]


def _row(r: ConfigResult, m: str, rec: ConfigResult | None) -> str:
    cls = ' class="rec"' if r is rec else ""
    cells = [r.label, f"{r.metrics[m]:.3f}", f"{r.metrics['ndcg@10']:.3f}", f"{r.metrics['mrr']:.3f}",
             f"{r.metrics['top1']:.3f}", str(r.bytes_per_vector), f"{r.search_ms['p50']:.2f}",
             f"{r.search_ms['p95']:.2f}", f"{r.rerank_ms['p50']:.1f}" if r.rerank_ms else "-",
             f"{r.total_ms['p50']:.2f}", f"{r.total_ms['p95']:.2f}"]
    return f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def render(report: EvalReport, bytes_png: str, latency_png: str) -> str:
    """The page (plots referenced by their file names)."""
    m = report.metric
    rec = report.recommended
    esc = html.escape
    rows = "\n".join(_row(r, m, rec) for r in sorted(report.results, key=lambda r: (-r.metrics[m],
                                                                                   r.bytes_per_vector)))
    head = ["configuration", m, "nDCG@10", "MRR", "top-1", "bytes/vector", "search p50 ms", "search p95 ms",
            "rerank p50 ms", "total p50 ms", "total p95 ms"]
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    summary = esc(report.summary()).replace("\n", "<br>")
    plots = (f'<img src="{esc(bytes_png)}" alt="{esc(m)} against bytes per vector">'
             f'<img src="{esc(latency_png)}" alt="{esc(m)} against latency">') if report.results else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>qvl eval: {esc(report.dataset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.rec {{ background: #fff3c4; font-weight: bold; }}
.summary {{ background: #f4f7fb; padding: 1em; border-left: 4px solid #1f77b4; }}
img {{ max-width: 48%; margin: 0.5em 1% 0 0; }}
</style></head><body>
<h1>qvl eval: {esc(report.dataset)}</h1>
<p>{report.documents} documents, {report.queries} queries, k={report.k}; target <code>{esc(report.target)}</code>;
model {esc(report.model or "precomputed vectors")}{"; reranker " + esc(report.reranker) if report.reranker else ""};
{esc(report.created)}; {report.elapsed:.1f} s (embedding {report.embed_seconds:.1f} s).</p>
<p class="summary">{summary}</p>
<p>Recommended: the configuration with the fewest bytes per vector (then no reranking, then the lowest p50 latency)
whose {esc(m)} is within the tolerance {report.tolerance:g} of the best. <em>exact</em> is numpy over the stored form
(the answer the precision gives without an index); <em>ann</em> is the database's own index; latency is per query,
one query at a time.</p>
{plots}
<h2>Every configuration</h2>
<table><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr>
{rows}
</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
