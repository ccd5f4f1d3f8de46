"""``qvl demo``: a sample corpus, ingested into Milvus Lite and searched, in one command.

The corpus (20 coloured shapes, most with a caption sidecar, and 5 texts) is drawn
locally; the models are the released ones, or with ``--offline-test-model`` tiny RANDOM
checkpoints built on the spot. A second run on the same ``--dir`` keeps the collection
and skips what is there. The demo ends with the ``qvl search`` line that searches the
same collection from any folder.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
import tempfile
from typing import Any

from embedder.hub import check_hub_reachable

from connectors.hits import format_table, hit_record, render_html
from embedder.contracts import EmbedderLike, RerankerLike

from .common import (DEFAULT_DIM, add_model_args, api_key_of, close_quietly, format_summary, load_embedder,
                     load_reranker, model_spec, one_line, open_target_first, print_error, progress_bar,
                     reranker_spec)

DEMO_COLLECTION = "qvl_demo"


def add_parser(subparsers: Any) -> None:
    """Add ``qvl demo`` to the ``qvl`` command line."""
    p = subparsers.add_parser("demo", help="build a sample corpus, ingest it and search it (start here)",
                       description="Build a small corpus (coloured shapes with captions, and a few texts), "
                                   "ingest it into Milvus Lite, and run text and image searches with reranking.")
    p.add_argument("--dir", metavar="DIR", help="where to put the corpus and database (default: a new temp folder)")
    p.add_argument("--to", metavar="TARGET", help="database (default: milvus:DIR/demo.db)")
    p.add_argument("--collection", default=DEMO_COLLECTION, help=f"collection (default: {DEMO_COLLECTION})")
    p.add_argument("-k", type=int, default=3, help="hits per search (default: 3)")
    p.add_argument("--html", metavar="FILE", help="write the image-query results as an HTML page")
    p.add_argument("--offline-test-model", action="store_true",
                   help="use a tiny RANDOM checkpoint built locally (no download; results are meaningless)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_model_args(p, reranker=True)
    p.set_defaults(func=run_demo)


DEMO_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 80, 220), "yellow": (240, 210, 20),
                "purple": (140, 50, 170)}
DEMO_SHAPES = ("circle", "square", "triangle", "star")
DEMO_TEXTS = {
    "tomatoes.txt": "Ripe tomatoes and strawberries are bright red fruit.",
    "sky.txt": "On a clear day the sky and the sea look deep blue.",
    "forest.txt": "A dense green forest of pine trees after the rain.",
    "bananas.txt": "A bunch of yellow bananas on the kitchen table.",
    "geometry.txt": "A polygon with three sides is called a triangle; one with four equal sides is a square.",
}


def _draw_shape(shape: str, colour: tuple[int, int, int], size: int = 160) -> Any:
    import math

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (250, 250, 250))
    d = ImageDraw.Draw(img)
    m = size // 6
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour)
    else:
        c, r_out, r_in = size / 2, size / 2 - m, (size / 2 - m) * 0.45
        pts = [(c + (r_out if i % 2 == 0 else r_in) * math.sin(i * math.pi / 5),
                c - (r_out if i % 2 == 0 else r_in) * math.cos(i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=colour)
    return img


def build_demo_corpus(folder: str | os.PathLike) -> pathlib.Path:
    """Write the demo corpus to ``folder``: 20 coloured shapes (most with a caption sidecar) and 5 texts.

    Returns the folder.
    """
    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, (colour, rgb) in enumerate(DEMO_COLOURS.items()):
        for j, shape in enumerate(DEMO_SHAPES):
            stem = f"{colour}_{shape}"
            _draw_shape(shape, rgb).save(out / f"{stem}.png")
            if (i + j) % 4 != 3:  # a few images go without a caption
                (out / f"{stem}.txt").write_text(f"A {colour} {shape} on a white background.\n", encoding="utf-8")
    for name, text in DEMO_TEXTS.items():
        (out / name).write_text(text + "\n", encoding="utf-8")
    return out


RANDOM_WEIGHTS_NOTE = ("--offline-test-model: a tiny checkpoint with RANDOM weights, built locally. Everything runs "
                       "for real (loading, preprocessing, embedding, database, reranking), but the scores and "
                       "rankings are RANDOM and mean nothing about the model's quality.")


def _tiny_checkpoint(path: pathlib.Path, kind: str, seed: int) -> str:
    """The demo's tiny checkpoint at ``path``, built once (the same seed gives the same weights)."""
    from embedder.testing import build_tiny_checkpoint

    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return str(path)
    return build_tiny_checkpoint(path, kind=kind, seed=seed)


def _demo_models(args: argparse.Namespace, folder: pathlib.Path) -> tuple[Any, Any] | int:
    from embedder.errors import MissingDependencyError, ModelLoadError, RemoteError

    if args.offline_test_model:
        print("=" * 78, file=sys.stderr)
        print("WARNING: " + RANDOM_WEIGHTS_NOTE, file=sys.stderr)
        print("=" * 78, file=sys.stderr)
        models = folder / ".models"
        try:
            emb_path = _tiny_checkpoint(models / "tiny-embedding", "embedding", 0)
            rr_path = _tiny_checkpoint(models / "tiny-reranker", "reranker", 1)
        except MissingDependencyError as exc:
            print_error(str(exc))
            return 2
        return load_embedder(emb_path, device="cpu"), load_reranker(rr_path, device="cpu")
    model, rr_spec, key = model_spec(args), reranker_spec(args), api_key_of(args)
    try:
        for spec in (model, rr_spec):  # both, before a 9 s load that would be wasted
            check_hub_reachable(spec)
        print(f"loading {model} and {rr_spec} (the first run downloads them) ...", file=sys.stderr)
        embedder = load_embedder(model, device=args.device, api_key=key)
    except (ModelLoadError, RemoteError) as exc:
        _demo_no_model(model, exc)
        return 1
    try:
        reranker = load_reranker(rr_spec, device=args.device, api_key=key)
    except (ModelLoadError, RemoteError) as exc:
        close_quietly(embedder)
        _demo_no_model(rr_spec, exc)
        return 1
    return embedder, reranker


def _demo_no_model(spec: str, exc: BaseException) -> None:
    """One line: why the model cannot be loaded, and what to do."""
    message = one_line(exc)
    if "--offline-test-model" not in message:
        message = (f"cannot load the model {spec!r}: {message}; point --model / --reranker (or $QVL_MODEL / "
                   "$QVL_RERANKER) at local checkpoint folders or a `qvl serve` URL, or try everything offline "
                   "with `qvl demo --offline-test-model` (random weights)")
    print_error(message)


def _demo_fresh(folder: pathlib.Path, identity: dict[str, Any]) -> bool:
    """True when the demo database in ``folder`` was built by another model/dim/target (and must be rebuilt).

    Records ``identity`` for the next run.
    """
    marker = folder / "demo.json"
    try:
        before = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    marker.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    return before != identity


DEMO_IMAGE_QUERY = "yellow_star.png"


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``qvl demo``: corpus -> ingest -> text and image searches with reranking.

    A second run on the same ``--dir`` (same models, dim and target) keeps the collection
    and skips every row already there.
    """
    import connectors
    from embedder.errors import MissingDependencyError, QVLError

    from connectors import ingest as pl

    # absolute, so that the "search it yourself" line works from any folder
    folder = pathlib.Path(args.dir).expanduser() if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="qvl-demo-"))
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = args.to or f"milvus:{folder / 'demo.db'}"
    try:
        open_target_first(target, args.collection)
    except MissingDependencyError as exc:
        print(f"note: {exc}\nnote: using the in-memory store instead", file=sys.stderr)
        target = "memory:"
    except (QVLError, ValueError) as exc:
        print_error(one_line(exc))
        return 2
    loaded = _demo_models(args, folder)
    if isinstance(loaded, int):
        return loaded
    embedder, reranker = loaded
    store = None
    try:
        corpus = build_demo_corpus(folder / "corpus")
        print(f"sample corpus: {corpus} (20 shapes, most with a caption sidecar, and 5 texts)")
        dim = min(DEFAULT_DIM, int(embedder.dim))
        identity = {"model": str(embedder.name), "reranker": str(reranker.name), "dim": dim, "target": target,
                    "collection": args.collection}
        if target == "memory:" or _demo_fresh(folder, identity):
            # another model or dim may have built it: start afresh
            store = connectors.connect(target, collection=args.collection, embedder=embedder, dim=None)
            store.drop()
            close_quietly(store)
        store = connectors.connect(target, collection=args.collection, embedder=embedder, dim=dim)
        store.create(exist_ok=True)
        source = pl.open_source(corpus)
        bar, update = progress_bar(source.estimate(), enabled=args.progress, desc=f"ingest -> {args.collection}")
        try:
            summary = pl.ingest(source.rows(), store, embedder, dim=dim, batch_size=8,
                                dead_letter=folder / "dead-letters.jsonl", on_progress=update)
        finally:
            bar.close()
        print(f"ingested into {target} (collection {args.collection}, dim {dim}): {format_summary(summary)}")
        image_query = corpus / DEMO_IMAGE_QUERY
        queries: list[tuple[str, Any]] = [
            ("text: 'a red circle'", "a red circle"),
            ("text: 'something blue and square'", "something blue and square"),
            ("text: 'fruit'", "fruit"),
            (f"image: {DEMO_IMAGE_QUERY}", {"image": str(image_query)}),
        ]
        image_records: list[dict[str, Any]] = []
        for label, query in queries:
            hits = store.search(query, k=args.k, rerank=reranker)
            records = [hit_record(i, h) for i, h in enumerate(hits, 1)]
            print(f"\n{label}  (top {args.k}, reranked)")
            print(format_table(records))
            if label.startswith("image"):
                image_records = records
        if args.html:
            page = render_html(image_records, title=f"qvl demo: image query {DEMO_IMAGE_QUERY}",
                               query_media=str(image_query),
                               note=RANDOM_WEIGHTS_NOTE if args.offline_test_model else None)
            pathlib.Path(args.html).write_text(page, encoding="utf-8")
            print(f"\nwrote {args.html}")
        if target != "memory:":
            print(f"\nsearch it yourself:\n  {_search_yourself(args, target, embedder, reranker)}")
        return 0 if summary.ok else 1
    except (QVLError, pl.IngestAborted) as exc:
        print_error(str(exc))
        return 2
    finally:
        close_quietly(store)
        close_quietly(reranker)
        close_quietly(embedder)


def _search_yourself(args: argparse.Namespace, target: str, embedder: EmbedderLike, reranker: RerankerLike) -> str:
    """The ``qvl search`` command line that searches the demo's collection, quoted for a POSIX shell."""
    cmd = ["qvl", "search", "a green triangle", "--in", target, "--collection", args.collection, "--rerank",
           "--html", "hits.html"]
    if args.offline_test_model:
        cmd += ["--model", str(embedder.name), "--reranker", str(reranker.name)]
    elif args.model or args.reranker:
        cmd += ["--model", model_spec(args), "--reranker", reranker_spec(args)]
    return shlex.join(cmd)
