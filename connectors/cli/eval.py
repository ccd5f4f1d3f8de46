"""``qvl eval``: measure dimension, precision, index and reranking on a labelled set (:mod:`connectors.eval`).

::

    qvl eval ./my-set --in milvus:./eval.db --dims 1024,512,256 --precisions float32,int8,binary \\
        --rerank --candidates 20,50 --json eval.json --html eval.html
    qvl eval --compare before.json after.json
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import (add_model_args, api_key_of, check_dim_arg, checkpoint_dim, checkpoint_min_dim, close_quietly,
                     load_embedder, load_reranker, model_spec, one_line, open_target_first, print_error, reranker_spec)

DEFAULT_EVAL_TARGET = "milvus:./qvl-eval.db"


def add_parser(subparsers: Any) -> None:
    """Add ``qvl eval`` to the ``qvl`` command line."""
    p = subparsers.add_parser(
        "eval", help="measure recall and cost of dims, precisions, indexes and reranking on a labelled set",
        description="Embed a labelled set (corpus.jsonl, queries.jsonl, qrels.tsv) once, then measure recall@k, "
                    "nDCG@10, MRR, top-1, latency and bytes per vector for each MRL dim x precision x index "
                    "(numpy exact / the database's ANN index) x reranking; print a table and the recommendation "
                    "(the smallest configuration within --tolerance of the best recall). --compare A.json B.json: "
                    "two runs query by query.")
    p.add_argument("dataset", nargs="?", metavar="DATASET", help="folder with corpus.jsonl, queries.jsonl, qrels.tsv")
    p.add_argument("--in", dest="target", default=DEFAULT_EVAL_TARGET, metavar="TARGET",
                   help=f"the database whose index is measured (default: {DEFAULT_EVAL_TARGET}); one collection "
                        "per dim and precision is written there (see --collection) and dropped at the end")
    p.add_argument("--collection", default="qvl_eval", metavar="PREFIX",
                   help="collection name prefix: PREFIX_DIM_PRECISION (default: qvl_eval; existing ones are replaced)")
    p.add_argument("--dims", type=_ints, metavar="D,D,...",
                   help="MRL dims (default: 2048,1024,512,256,128,64 up to the model's full dim)")
    p.add_argument("--precisions", type=_words, default=["float32", "float16", "int8", "binary"], metavar="P,P,...",
                   help="of float32, float16, int8, binary (default: all four)")
    p.add_argument("--index", type=_words, default=["exact", "ann"], metavar="exact,ann",
                   help="exact (numpy over the stored form), ann (the database's index) or both (default)")
    p.add_argument("--ef", type=_ints, metavar="N,N,...",
                   help="ANN search breadths to try (Milvus ef/nprobe, pgvector ef_search, Qdrant hnsw_ef, "
                        "Faiss ef_search, Weaviate the collection's ef; default: the store's own)")
    p.add_argument("--rerank", action="store_true", help="measure reranking too")
    p.add_argument("--candidates", type=_ints, metavar="N,N,...",
                   help="rerank candidate counts (default: max(4k, 20))")
    p.add_argument("-k", type=int, default=10, help="search depth of recall@k, MRR, top-1 (default: 10)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="recall@k the recommendation may give up against the best (default: 0.01)")
    p.add_argument("--instruction", help="query instruction (default: the model's)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (what --compare reads)")
    p.add_argument("--html", metavar="FILE", help="write an HTML report with two plots (PNG files next to it)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (they show on a terminal: rate and ETA)")
    p.add_argument("--keep", action="store_true", help="keep the collections written for the measurement")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="compare two --json reports query by query (no DATASET)")
    p.add_argument("--config", metavar="LABEL", help="with --compare: the configuration to compare "
                   "(default: A's recommended one)")
    p.add_argument("--config-b", metavar="LABEL", help="with --compare: B's configuration when it is not --config's "
                   "(default: the same; with no configuration in common, each report's recommended one)")
    p.add_argument("--metric", help="with --compare: recall@k (default), ndcg@10, mrr or top1")
    add_model_args(p, reranker=True)
    p.set_defaults(func=run_eval)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _words(text: str) -> list[str]:
    return [x.strip().lower() for x in text.split(",") if x.strip()]


def run_compare(args: argparse.Namespace) -> int:
    from embedder.errors import QVLError

    from connectors.eval import compare

    if args.dataset:
        print_error("--compare takes two reports and no DATASET")
        return 2
    try:
        result = compare(args.compare[0], args.compare[1], config=args.config,
                         config_b=args.config_b, metric=args.metric)
    except (QVLError, ValueError) as exc:
        print_error(one_line(exc))
        return 2
    print(result.format())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=1)
        print(f"wrote {args.json}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``qvl eval``; 0 on success, 2 when the evaluation could not run."""
    if args.compare:
        return run_compare(args)
    from embedder.errors import QVLError

    from connectors.eval import evaluate, load_dataset, write_html

    if not args.dataset:
        print_error("give a DATASET folder (corpus.jsonl, queries.jsonl, qrels.tsv), or --compare A.json B.json")
        return 2
    unknown = [i for i in args.index if i not in ("exact", "ann")]
    if unknown or not args.index:
        print_error(f"--index takes exact, ann or both, got {','.join(args.index)}")
        return 2
    if args.k < 1 or args.tolerance < 0:
        print_error("-k must be positive and --tolerance at least 0")
        return 2
    try:
        from connectors.quantization import check_precision

        for p in args.precisions:
            check_precision(p)
        data = load_dataset(args.dataset)
    except (QVLError, ValueError) as exc:
        print_error(one_line(exc))
        return 2
    for d in args.dims or []:
        problem = check_dim_arg(d, full=None if data.has_vectors else checkpoint_dim(model_spec(args)),
                                minimum=None if data.has_vectors else checkpoint_min_dim(model_spec(args)), flag="--dims")
        if problem:
            print_error(problem.replace("; nothing was created", ""))
            return 2
    embedder = reranker = None
    try:
        try:
            if "ann" in args.index:
                open_target_first(args.target, f"{args.collection}_check")
            key = api_key_of(args)
            if not data.has_vectors:
                embedder = load_embedder(model_spec(args), device=args.device, api_key=key)
            if args.rerank:
                reranker = load_reranker(reranker_spec(args), device=args.device, api_key=key)
            print(f"evaluating {len(data.corpus)} documents and {len(data.queries)} queries of {data.name}"
                  f"{' on ' + args.target if 'ann' in args.index else ''}", file=sys.stderr)
            report = evaluate(data, args.target, embedder=embedder, reranker=reranker, dims=args.dims,
                              precisions=args.precisions, exact="exact" in args.index, ann="ann" in args.index,
                              ef=args.ef, candidates=args.candidates, k=args.k, tolerance=args.tolerance,
                              collection=args.collection, keep=args.keep, instruction=args.instruction,
                              show_progress=args.progress)
        except (QVLError, ValueError) as exc:
            print_error(one_line(exc))
            return 2
        print(report.table())
        print()
        print(report.summary())
        if args.json:
            report.save_json(args.json)
            print(f"wrote {args.json}")
        if args.html:
            paths = write_html(report, args.html)
            print(f"wrote {', '.join(str(p) for p in paths)}")
        rate = report.queries * len(report.results) / report.elapsed if report.elapsed > 0 else 0.0
        print(f"{len(report.results)} configurations, {report.queries} queries, {report.documents} documents; "
              f"embedding {report.embed_seconds:.1f} s, elapsed {report.elapsed:.1f} s "
              f"({rate:.0f} query-configurations/s)")
        return 0
    finally:
        close_quietly(reranker)
        close_quietly(embedder)
