"""Qwen3-VL as Weaviate's own vectorizer and reranker: a collection whose modules call ``qvl serve``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from embedder.errors import ConnectorError, InputError

from .client import collection_name, driver_errors
from .schema import index_config, make_property, weaviate_data_type

if TYPE_CHECKING:  # pragma: no cover
    import weaviate


def create_server_vectorized_collection(
        client: "weaviate.WeaviateClient", name: str, *, inference_url: str | None = None,
        image_fields: Sequence[str] = ("image",), text_fields: Sequence[str] = ("text",),
        weights: Mapping[str, float] | None = None, clip_vector: str | None = "multimodal",
        text2vec_vector: str | None = None, text2vec_dimensions: int | None = None,
        reranker: bool = True, extra_properties: Mapping[str, Any] | None = None,
        index: str = "hnsw", index_params: Mapping[str, Any] | None = None,
        self_provided: Mapping[str, int] | None = None, exist_ok: bool = False) -> Any:
    """Create a collection that Weaviate vectorizes by calling ``qvl serve``.

    * ``multi2vec-clip`` (named vector ``clip_vector``) embeds ``image_fields`` (BLOB,
      base64 images) and ``text_fields`` (TEXT); an object's vector is Weaviate's weighted
      mean of its fields' vectors (``weights``: field -> weight; default equal).
      ``near_text`` and ``near_image`` queries go through the same service.
    * ``text2vec-transformers`` (named vector ``text2vec_vector``, enabled when a name or
      ``text2vec_dimensions`` is given) embeds the text fields with the query/passage
      distinction, at ``text2vec_dimensions`` (MRL) or the service's default.
    * ``reranker-transformers`` (``reranker=True``) makes ``rerank=`` in queries call the
      service's Qwen3-VL reranker. Its URL is the server's ``RERANKER_INFERENCE_API``;
      Weaviate has no per-collection reranker URL.
    * ``self_provided``: extra named vectors (name -> dim) for client-side vectors, e.g.
      videos, which cannot travel through Weaviate's modules.

    ``inference_url`` (the ``qvl serve`` base URL as Weaviate reaches it) overrides the
    server's ``CLIP_INFERENCE_API`` / ``TRANSFORMERS_INFERENCE_API`` for this collection.

    Returns:
        the native ``weaviate.collections.Collection``.

    Raises:
        ConnectorError: the collection exists and ``exist_ok`` is False, or Weaviate
            refused the configuration (e.g. a module is not enabled).
    """
    from weaviate.classes.config import Configure, DataType, Multi2VecField

    cname = collection_name(name)
    if clip_vector is None and text2vec_vector is None and text2vec_dimensions is None:
        raise InputError("enable multi2vec-clip (clip_vector) and/or text2vec-transformers "
                         "(text2vec_vector or text2vec_dimensions)")
    weights = dict(weights or {})
    unknown = set(weights) - set(image_fields) - set(text_fields)
    if unknown:
        raise InputError(f"weights name unknown fields {sorted(unknown)}; fields are "
                         f"{sorted(set(image_fields) | set(text_fields))}")

    def fields(names: Sequence[str]) -> list[Any]:
        return [Multi2VecField(name=n, weight=weights[n]) if weights else n for n in names]  # type: ignore[misc]

    vector_index = index_config(index, index_params or {}, defaults=False)
    properties = [make_property(f, DataType.BLOB) for f in image_fields]
    properties += [make_property(f, DataType.TEXT) for f in text_fields if f not in image_fields]
    properties += [make_property(k, weaviate_data_type(v, k)) for k, v in (extra_properties or {}).items()]
    vectors = []
    if clip_vector is not None:
        vectors.append(Configure.Vectors.multi2vec_clip(
            name=clip_vector, inference_url=inference_url, image_fields=fields(image_fields) or None,
            text_fields=fields(text_fields) or None, vector_index_config=vector_index))
    if text2vec_vector is not None or text2vec_dimensions is not None:
        vectors.append(Configure.Vectors.text2vec_transformers(
            name=text2vec_vector or "text", inference_url=inference_url, dimensions=text2vec_dimensions,
            source_properties=list(text_fields), vectorize_collection_name=False,
            vector_index_config=vector_index))
    for vname, _vdim in (self_provided or {}).items():
        vectors.append(Configure.Vectors.self_provided(name=vname, vector_index_config=vector_index))
    with driver_errors(f"creating collection {cname}"):
        if client.collections.exists(cname):
            if not exist_ok:
                raise ConnectorError(f"collection {cname} already exists (pass exist_ok=True to keep it)")
            return client.collections.get(cname)
        return client.collections.create(
            cname, properties=properties, vector_config=vectors,
            reranker_config=Configure.Reranker.transformers() if reranker else None)
