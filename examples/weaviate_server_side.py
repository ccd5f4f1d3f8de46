"""Qwen3-VL as Weaviate's own vectorizer and reranker, through a running ``qvl serve``.

Weaviate's ``multi2vec-clip`` module calls ``qvl serve`` to embed objects inserted with
no vectors (captions and base64 images) and ``near_text`` / ``near_image`` queries; its
``reranker-transformers`` module calls the service's Qwen3-VL reranker for ``rerank=``.
No model is loaded in this process. A video cannot travel through Weaviate's modules,
so it is embedded through the service's own API (``RemoteEmbedder``) and stored as a
self-provided named vector in the same collection.

Starts nothing itself: give it a Weaviate whose modules are enabled and whose
``RERANKER_INFERENCE_API`` is the service (the reranker URL is server-wide in Weaviate;
the vectorizer URL is set per collection here), and the service's URL as Weaviate
reaches it::

    qvl serve --model Qwen/Qwen3-VL-Embedding-2B --reranker Qwen/Qwen3-VL-Reranker-2B --port 8000
    python examples/weaviate_server_side.py --weaviate http://localhost:8080 --service http://localhost:8000

(With the README's docker-compose file Weaviate reaches the service as ``http://qvl:8000``
while this script reaches it as ``http://localhost:8000``: pass ``--inference-url
http://qvl:8000`` too.)
"""
from __future__ import annotations

import argparse
import base64
import io
import sys

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220)}


def png_b64(colour: str, shape: str, *, size: int = 96) -> str:
    """A coloured shape on white as a base64 PNG (Weaviate's BLOB format)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(img)
    box = (size // 5, size // 5, size - size // 5, size - size // 5)
    (pen.ellipse if shape == "circle" else pen.rectangle)(box, fill=COLOURS[colour])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def video_frames(n: int = 4) -> list:
    """A tiny 'video': a red disc moving right, as a list of frames."""
    from PIL import Image, ImageDraw

    frames = []
    for i in range(n):
        img = Image.new("RGB", (96, 64), "white")
        x = 8 + i * 16
        ImageDraw.Draw(img).ellipse((x, 16, x + 32, 48), fill=COLOURS["red"])
        frames.append(img)
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weaviate", default="http://localhost:8080",
                    help="Weaviate URL: http://host:8080 or weaviate://host:8080 (?grpc=PORT if not 50051)")
    ap.add_argument("--service", default="http://localhost:8000", help="the running qvl serve, as this script reaches it")
    ap.add_argument("--inference-url", help="the qvl serve URL as Weaviate reaches it (default: --service)")
    ap.add_argument("--collection", default="ServerSidePhotos", help="collection to create (dropped at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the collection at the end")
    args = ap.parse_args(argv)

    from weaviate.classes.data import DataObject
    from weaviate.classes.query import MetadataQuery, Rerank
    from weaviate.util import generate_uuid5

    from connectors.weaviate import WeaviateTarget, connect_client, create_server_vectorized_collection
    from embedder.remote import RemoteEmbedder

    target = args.weaviate if "://" in args.weaviate else f"http://{args.weaviate}"
    client = connect_client(WeaviateTarget.parse(target))
    remote = RemoteEmbedder(args.service)
    try:
        video_dim = remote.dim
        client.collections.delete(args.collection)  # a clean start for the example
        photos = create_server_vectorized_collection(
            client, args.collection,
            inference_url=args.inference_url or args.service,  # multi2vec-clip calls qvl serve
            image_fields=["image"], text_fields=["caption"],
            weights={"image": 0.7, "caption": 0.3},          # Weaviate's weighted mean of the fields
            reranker=True,                                   # reranker-transformers -> qvl serve /rerank
            self_provided={"video": video_dim},              # client-side vectors, e.g. videos
            extra_properties={"key": str})
        print(f"collection {photos.name}: vectors {sorted(photos.config.get().vector_config)}")

        objects = {
            "note-bike": {"caption": "A red bicycle leaning on a brick wall."},
            "note-soup": {"caption": "Tomato soup in a white bowl."},
            "img-red-circle": {"image": png_b64("red", "circle")},
            "img-blue-square": {"image": png_b64("blue", "square")},
            "vl-green-circle": {"caption": "A green circle on a white background.",
                                "image": png_b64("green", "circle")},
        }
        result = photos.data.insert_many([  # no vectors: Weaviate asks qvl serve for them
            DataObject(properties={"key": key, **props}, uuid=generate_uuid5(key)) for key, props in objects.items()])
        print(f"inserted {len(objects) - len(result.errors)} objects without vectors; errors: {dict(result.errors)}")

        # The video: embedded through the service's native API, stored as a self-provided vector.
        # Its caption still gets a multimodal vector from Weaviate.
        video_vec = remote.embed([{"video": video_frames()}], dim=video_dim)[0]
        photos.data.insert({"key": "video-red-disc", "caption": "A red disc rolling to the right."},
                           uuid=generate_uuid5("video-red-disc"), vector={"video": video_vec.tolist()})
        print(f"inserted video-red-disc with a client-side {len(video_vec)}-dim 'video' vector")

        query = "a red circle"
        res = photos.query.near_text(query, target_vector="multimodal", limit=4,
                                     rerank=Rerank(prop="caption", query=query),
                                     return_metadata=MetadataQuery(distance=True))
        print(f"\nnear_text {query!r} (multimodal), reranked by Weaviate calling qvl serve:")
        for o in res.objects:
            rerank = f"{o.metadata.rerank_score:.3f}" if o.metadata.rerank_score is not None else "-"
            print(f"  {o.properties['key']:16s} distance {o.metadata.distance:.3f}  rerank {rerank}")

        res = photos.query.near_image(objects["img-red-circle"]["image"], target_vector="multimodal", limit=3,
                                      return_metadata=MetadataQuery(distance=True))
        print("\nnear_image (the red circle's PNG):")
        for o in res.objects:
            print(f"  {o.properties['key']:16s} distance {o.metadata.distance:.3f}")
        print(f"near_image best match: {res.objects[0].properties['key']}")

        query_vec = remote.embed_queries(["a red ball moving"], dim=video_dim)[0]
        res = photos.query.near_vector(query_vec.tolist(), target_vector="video", limit=1,
                                       return_metadata=MetadataQuery(distance=True))
        print(f"\nnear_vector on 'video' (query embedded by the service): {res.objects[0].properties['key']} "
              f"distance {res.objects[0].metadata.distance:.3f}")
        if not args.keep:
            client.collections.delete(args.collection)
            print(f"\ndropped {photos.name}")
    finally:
        remote.close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
