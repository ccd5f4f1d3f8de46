"""Choose dimension, precision, index and reranking by measurement (``qvl eval``).

::

    from connectors.eval import evaluate, write_html, compare

    report = evaluate("my-set/", "milvus:./eval.db", embedder=emb, reranker=rr,
                      dims=[1024, 512, 256], precisions=["float32", "int8", "binary"], ef=[32, 128])
    print(report.table()); print(report.summary())
    report.save_json("eval.json"); write_html(report, "eval.html")
    print(compare("before.json", "eval.json").format())

:mod:`.dataset` reads the labelled set (BEIR-style folder), :mod:`.grid` runs the grid,
:mod:`.metrics` computes the metrics with pytrec_eval, :mod:`.report` holds the outcome (table,
JSON, recommendation), :mod:`.html` the HTML page and its plots, :mod:`.compare` two reports
query by query. pytrec_eval and matplotlib (the ``eval`` extra) are imported when first used.
"""
from __future__ import annotations

from .compare import Comparison, compare
from .dataset import Dataset, load_dataset, write_dataset
from .grid import Config, ConfigResult
from .html import write_html
from .report import EvalReport, recommend
from .run import evaluate

__all__ = ["evaluate", "compare", "write_html", "load_dataset", "write_dataset", "Dataset", "EvalReport",
           "Config", "ConfigResult", "Comparison", "recommend"]
