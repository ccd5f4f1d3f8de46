"""Weaviate quickstart: client-side Qwen3-VL vectors in named vectors at two MRL dims.

The embedder and the reranker run in this process. The collection gets two named
vectors cut from the same forward pass (``full`` and a 4x smaller ``coarse``); we upsert
texts, generated images and fused text+image rows, then search with a Weaviate filter
and rerank the candidates with the Qwen3-VL reranker.

Needs a running Weaviate (nothing is started here), e.g. ``docker compose up`` with the
compose file of the README, or the test helper's binary::

    python examples/weaviate_quickstart.py --weaviate weaviate://localhost:8080
    python examples/weaviate_quickstart.py --weaviate weaviate://localhost:8080 --offline-test-model

``--offline-test-model`` builds a tiny checkpoint with RANDOM weights locally (no
download): everything runs for real, but scores and rankings are meaningless.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"
DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220)}
SHAPES = ("circle", "square")


def weaviate_target(url: str) -> str:
    """``http://host:8080`` -> ``weaviate://host:8080`` (the connector's scheme); others unchanged."""
    for prefix, scheme in (("http://", "weaviate://"), ("https://", "weaviate+https://")):
        if url.startswith(prefix):
            return scheme + url[len(prefix):]
    return url


def draw(colour: str, shape: str, path: pathlib.Path) -> str:
    """A coloured shape on white, saved as PNG; returns the path."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 96), "white")
    pen = ImageDraw.Draw(img)
    box = (18, 18, 78, 78)
    (pen.ellipse if shape == "circle" else pen.rectangle)(box, fill=COLOURS[colour])
    img.save(path)
    return str(path)


def load_models(args: argparse.Namespace, workdir: pathlib.Path):
    from embedder import Embedder, Reranker

    if args.offline_test_model:
        from embedder.testing import build_tiny_checkpoint

        print("WARNING: --offline-test-model uses a tiny checkpoint with RANDOM weights, built locally;\n"
              "everything runs for real, but the scores and rankings below are RANDOM.", file=sys.stderr)
        emb_path = build_tiny_checkpoint(workdir / "tiny-embedding", kind="embedding")
        rr_path = build_tiny_checkpoint(workdir / "tiny-reranker", kind="reranker", seed=1)
        return Embedder.from_pretrained(emb_path, device="cpu"), Reranker.from_pretrained(rr_path, device="cpu")
    print(f"loading {args.model} and {args.reranker} (the first run downloads them) ...", file=sys.stderr)
    return (Embedder.from_pretrained(args.model, device=args.device),
            Reranker.from_pretrained(args.reranker, device=args.device))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weaviate", default="weaviate://localhost:8080",
                    help="Weaviate URL: weaviate://host:8080 (?grpc=PORT for a non-default gRPC port) or http://...")
    ap.add_argument("--collection", default="QuickstartPhotos", help="collection to create (dropped at the end)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"embedding model, id or directory (default: {DEFAULT_MODEL})")
    ap.add_argument("--reranker", default=DEFAULT_RERANKER,
                    help=f"reranker model, id or directory (default: {DEFAULT_RERANKER})")
    ap.add_argument("--offline-test-model", action="store_true",
                    help="tiny RANDOM checkpoints built locally instead of --model/--reranker (results are random)")
    ap.add_argument("--device", default="auto", help="torch device (default: auto)")
    ap.add_argument("--keep", action="store_true", help="keep the collection at the end")
    args = ap.parse_args(argv)

    from weaviate.classes.query import Filter

    from connectors import connect

    with tempfile.TemporaryDirectory(prefix="qvl-weaviate-quickstart-") as tmp:
        workdir = pathlib.Path(tmp)
        emb, rr = load_models(args, workdir)
        # Two named vectors from one forward pass: Matryoshka (MRL) prefixes of the full vector.
        full = min(1024, emb.dim)
        named = {"full": full, "coarse": max(64, full // 4)}
        try:
            with connect(weaviate_target(args.weaviate), collection=args.collection, embedder=emb,
                         named_vectors=named) as store:
                store.create(fields={"color": str, "shape": str, "price": float}, exist_ok=True)
                print(f"collection {store.name}: named vectors {store.named_vectors}")

                rows = [
                    {"id": "note-1", "text": "A red bicycle leaning on a brick wall.", "color": "red",
                     "shape": "none", "price": 120.0},
                    {"id": "note-2", "text": "Fresh green peas in a blue bowl.", "color": "green",
                     "shape": "none", "price": 4.5},
                ]
                for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
                    path = draw(colour, shape, workdir / f"{colour}-{shape}.png")
                    if i % 2 == 0:  # an image alone
                        rows.append({"id": f"img-{colour}-{shape}", "image": path, "color": colour,
                                     "shape": shape, "price": 10.0 + i})
                    else:           # an image with its caption: one fused vector
                        rows.append({"id": f"vl-{colour}-{shape}", "image": path,
                                     "text": f"A {colour} {shape} on a white background.",
                                     "color": colour, "shape": shape, "price": 60.0 + i,
                                     "metadata": {"caption_source": "generated"}})
                report = store.upsert(rows)
                print(f"upserted: written {len(report.written)}, failed {len(report.failed)} {report.failed}")
                report = store.upsert(rows)  # idempotent: uuid5 of each id, objects replaced
                print(f"upserted again: written {len(report.written)}; count {store.count()}")

                query = "a red circle"
                cheap = Filter.by_property("price").less_than(100.0)
                hits = store.search(query, k=3, target_vector="coarse", filter=cheap, rerank=rr, candidates=8)
                print(f"\nsearch {query!r} on 'coarse', price < 100, reranked:")
                for h in hits:
                    rerank = f"{h.rerank_score:.3f}" if h.rerank_score is not None else "-"
                    print(f"  {h.id:18s} cosine {h.score:.3f}  rerank {rerank}  {h.fields['modality']:5s} "
                          f"price {h.fields['price']}")

                query_image = draw("blue", "circle", workdir / "query.png")
                hits = store.search({"image": query_image}, k=3, filter={"modality": {"$in": ["image", "vl"]}})
                print("\nsearch by image (blue circle) on 'full', images and fused rows only:")
                for h in hits:
                    print(f"  {h.id:18s} cosine {h.score:.3f}  {h.fields['media']}")
                if not args.keep:
                    store.drop()
                    print(f"\ndropped {store.name}")
        finally:
            emb.close()
            rr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
