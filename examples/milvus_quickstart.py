"""Qwen3-VL search in Milvus Lite: texts, images and a fused row in one collection.

Creates (or reopens) a collection in a Milvus Lite file at an MRL dim, upserts a few
texts, a few generated images and one fused text+image row, then searches by text and
by image, with a filter and with reranking.

Usage:
    python examples/milvus_quickstart.py                          # Qwen/Qwen3-VL-Embedding-2B from the hub
    python examples/milvus_quickstart.py --model ./my-checkpoint --dim 512
    python examples/milvus_quickstart.py --offline-test-model     # tiny random checkpoint, no download

With ``--offline-test-model`` the models are tiny random checkpoints built on the spot:
everything runs, but the rankings are random.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from contextlib import ExitStack
from typing import Any, Sequence

DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"
DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DOCUMENT_INSTRUCTION = "Represent the user's input."  # how upsert embeds rows
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def make_images(directory: pathlib.Path) -> dict[str, str]:
    """Write one small picture per colour (a filled circle on white); ``{colour: path}``."""
    from PIL import Image, ImageDraw

    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rgb in COLORS.items():
        image = Image.new("RGB", (160, 120), "white")
        ImageDraw.Draw(image).ellipse((40, 20, 120, 100), fill=rgb)
        path = directory / f"{name}_circle.png"
        image.save(path)
        paths[name] = str(path)
    return paths


def corpus(images: dict[str, str]) -> list[dict[str, Any]]:
    """Texts, images and one fused row, with a declared ``color`` field and metadata."""
    return [
        {"id": "txt-apple", "text": "A ripe red apple on a wooden table.", "color": "red",
         "metadata": {"kind": "note"}},
        {"id": "txt-sea", "text": "Waves on a blue sea under a clear sky.", "color": "blue",
         "metadata": {"kind": "note"}},
        {"id": "txt-forest", "text": "A green forest path in spring.", "color": "green",
         "metadata": {"kind": "note"}},
        *({"id": f"img-{name}", "image": path, "color": name, "metadata": {"kind": "picture"}}
          for name, path in images.items()),
        {"id": "vl-red", "text": "Logo draft: a red circle.", "image": images["red"], "color": "red",
         "metadata": {"kind": "draft"}},
    ]


def print_hits(title: str, hits: Sequence[Any]) -> None:
    """One line per hit: id, vector score, rerank score (when reranked), colour."""
    print(f"\n{title}")
    for hit in hits:
        rerank = f"  rerank={hit.rerank_score:.3f}" if hit.rerank_score is not None else ""
        print(f"  {hit.id:<11} score={hit.score:.3f}{rerank}  color={hit.fields.get('color')}")


def load_models(args: argparse.Namespace, stack: ExitStack) -> tuple[Any, Any]:
    """The embedder and reranker: from ``--model``/``--reranker``, or tiny random ones built offline."""
    from embedder import Embedder, Reranker

    model, reranker = args.model, args.reranker
    if args.offline_test_model:
        from embedder.testing import build_tiny_checkpoint

        print("WARNING: --offline-test-model: tiny checkpoints with RANDOM weights; everything runs, "
              "but the scores and rankings below are random.", file=sys.stderr)
        scratch = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qvl-example-")))
        model = build_tiny_checkpoint(scratch / "embedding", kind="embedding")
        reranker = build_tiny_checkpoint(scratch / "reranker", kind="reranker", seed=1)
    emb = stack.enter_context(Embedder.from_pretrained(model, device=args.device))
    rr = stack.enter_context(Reranker.from_pretrained(reranker, device=args.device))
    return emb, rr


def run(args: argparse.Namespace) -> None:
    """The quickstart itself."""
    import connectors
    from connectors.core import check_dim
    from embedder.errors import InputError

    with ExitStack() as stack:
        emb, rr = load_models(args, stack)
        dim = args.dim if args.dim is not None else min(1024, emb.dim)
        try:
            dim = check_dim(dim, emb)  # before anything is created
        except InputError as exc:
            raise SystemExit(f"--dim: {exc}") from None
        db = pathlib.Path(args.db)
        images = make_images(db.parent / f"{db.stem}_images")

        store = stack.enter_context(
            connectors.connect(f"milvus:{db}", collection=args.collection, embedder=emb, dim=dim))
        store.create(fields={"color": str}, exist_ok=True)  # reopening checks dim and fields
        report = store.upsert(corpus(images))
        print(f"collection {args.collection!r} in {db} (dim {store.dim}): wrote {len(report.written)} rows, "
              f"{len(report.failed)} failed {report.failed}; {store.count()} rows stored")
        store.refresh_index()  # Milvus Lite: index the rows just written

        print_hits("text query 'a red fruit':", store.search("a red fruit", k=3))
        print_hits("image query (the blue picture, embedded as a query):",
                   store.search({"image": images["blue"]}, k=3))
        print_hits("the same image with the document instruction (finds its own row first):",
                   store.search({"image": images["blue"]}, k=3, instruction=DOCUMENT_INSTRUCTION))
        print_hits("text query with a filter (color == \"red\"):",
                   store.search("a circle", k=3, filter='color == "red"'))
        print_hits("filter on metadata (kind is not note), reranked:",
                   store.search("a red circle", k=3, filter='metadata["kind"] != "note"', rerank=rr, candidates=5))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"embedding checkpoint: hub id or path ({DEFAULT_MODEL})")
    ap.add_argument("--reranker", default=DEFAULT_RERANKER,
                    help=f"reranker checkpoint: hub id or path ({DEFAULT_RERANKER})")
    ap.add_argument("--offline-test-model", action="store_true",
                    help="build tiny random checkpoints instead (no download; results are random)")
    ap.add_argument("--db", default="./milvus_quickstart.db", help="the Milvus Lite file (must end in .db)")
    ap.add_argument("--collection", default="quickstart")
    ap.add_argument("--dim", type=int, default=None, help="MRL dim (default: 1024, or the model's full dim if smaller)")
    ap.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda...")
    args = ap.parse_args(argv)
    if not args.db.endswith(".db"):
        ap.error(f"--db must be a Milvus Lite file ending in .db, got {args.db!r}")
    run(args)


if __name__ == "__main__":
    main()
