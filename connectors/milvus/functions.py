"""pymilvus helpers for people who use pymilvus directly, with Qwen3-VL behind them.

- :class:`QwenVLEmbeddingFunction`, a ``pymilvus.model``-style embedding function.
- :func:`text_embedding_function` and :func:`add_text_embedding_function`, which make
  Milvus itself call our OpenAI-compatible service (``qvl serve``) through a
  ``TEXT_EMBEDDING`` function.
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import ConnectorError, InputError, NotFoundError, SchemaMismatchError, UnavailableError

from .wire import (LITE_VERSION_PREFIX, check_name, check_vector_dim, driver_errors, dtype_name, field_dim,
                   fields_by_name, is_unavailable, translated)

if TYPE_CHECKING:  # pragma: no cover
    from pymilvus import Function, MilvusClient

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- pymilvus.model twin
class QwenVLEmbeddingFunction:
    """A ``pymilvus.model``-style dense embedding function backed by Qwen3-VL.

    Drop-in for code written against ``pymilvus.model.dense.*EmbeddingFunction``: the
    same ``encode_documents`` / ``encode_queries`` / ``dim`` / ``__call__``, returning
    lists of float32 numpy arrays. Unlike text-only functions, items may also be images,
    videos or fused dicts.

    Args:
        embedder: an ``Embedder`` or ``RemoteEmbedder``.
        dim: MRL dim of the vectors (default: the embedder's full dim).
        instruction: the query instruction (default: a generic retrieval one).

    Example:
        >>> ef = QwenVLEmbeddingFunction(emb, dim=1024)                         # doctest: +SKIP
        >>> client.insert("docs", [{"id": i, "vector": v, "text": t}
        ...     for i, (t, v) in enumerate(zip(texts, ef.encode_documents(texts)))])  # doctest: +SKIP
        >>> client.search("docs", data=ef.encode_queries(["a red car"]), limit=5)  # doctest: +SKIP
    """

    def __init__(self, embedder: EmbedderLike, dim: int | None = None, *, instruction: str | None = None) -> None:
        if embedder is None:
            raise InputError("QwenVLEmbeddingFunction needs an embedder (Embedder or RemoteEmbedder)")
        self.embedder = embedder
        self._dim = None if dim is None else check_vector_dim("dim", dim)
        self.instruction = instruction

    @property
    def dim(self) -> int:
        """The dimension of the vectors returned."""
        return self._dim if self._dim is not None else int(self.embedder.dim)

    @property
    def model_name(self) -> str:
        """The embedder's checkpoint name."""
        return str(getattr(self.embedder, "name", "") or "Qwen3-VL-Embedding")

    def encode_documents(self, documents: Sequence[Any]) -> list[np.ndarray]:
        """Embed documents (texts, images, videos or fused dicts).

        Raises:
            InputError: a bad document (naming its index).
        """
        return list(self.embedder.embed_documents(list(documents), dim=self.dim))

    def encode_queries(self, queries: Sequence[Any]) -> list[np.ndarray]:
        """Embed queries with the query instruction.

        Raises:
            InputError: a bad query (naming its index).
        """
        return list(self.embedder.embed_queries(list(queries), dim=self.dim, instruction=self.instruction))

    def __call__(self, texts: Sequence[Any]) -> list[np.ndarray]:
        """Same as :meth:`encode_documents` (as in pymilvus.model)."""
        return self.encode_documents(texts)

    def __repr__(self) -> str:
        return f"QwenVLEmbeddingFunction({self.model_name!r}, dim={self.dim})"


# ---------------------------------------------------------------------------- server-side functions
def text_embedding_function(*, base_url: str, model_name: str, dim: int, input_field: str, output_field: str,
                            api_key: str | None = None, name: str | None = None,
                            extra_params: Mapping[str, Any] | None = None) -> "Function":
    """A ``TEXT_EMBEDDING`` function calling our OpenAI-compatible service, for a new schema.

    Add it to a ``CollectionSchema`` before ``create_collection``: Milvus (and Milvus Lite)
    then embeds the ``input_field`` text of every insert into ``output_field`` and embeds
    text queries given to ``search(data=["..."])``.

    Args:
        base_url: the service's OpenAI base URL, e.g. ``http://localhost:8000/v1``.
        model_name: the model name the service expects.
        dim: output dim (sent as ``dimensions``; an MRL dim).
        input_field: a VARCHAR field.
        output_field: a FLOAT_VECTOR(dim) field.
        api_key: the service's key, if it wants one (Milvus Lite requires some value and
            falls back to ``OPENAI_API_KEY``; ``"EMPTY"`` is used when neither is set).
            Milvus servers read provider keys from their ``credential`` config instead:
            pass ``extra_params={"credential": "..."}``.
        name: function name (default ``<output_field>_qvl``).
        extra_params: other provider params, passed through.

    Returns:
        A ``pymilvus.Function``.

    Example:
        >>> schema.add_function(text_embedding_function(base_url="http://localhost:8000/v1",
        ...     model_name="Qwen3-VL-Embedding-2B", dim=1024, input_field="text",
        ...     output_field="vector"))  # doctest: +SKIP
    """
    import os

    from pymilvus import Function, FunctionType

    check_vector_dim("dim", dim)
    check_name("field", input_field)
    check_name("field", output_field)
    if not isinstance(base_url, str) or not base_url.lower().startswith(("http://", "https://")):
        raise InputError(f"base_url must be an http(s) URL such as 'http://localhost:8000/v1', got {base_url!r}")
    params: dict[str, Any] = {"provider": "openai", "model_name": model_name, "base_url": base_url.rstrip("/"),
                              "dimensions": int(dim)}
    key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    params["api_key"] = key
    params.update(extra_params or {})
    return Function(name=name or f"{output_field}_qvl", function_type=FunctionType.TEXTEMBEDDING,
                    input_field_names=[input_field], output_field_names=[output_field], params=params)


def add_text_embedding_function(client: "MilvusClient", collection: str, *, base_url: str, model_name: str,
                                dim: int, input_field: str, output_field: str, api_key: str | None = None,
                                name: str | None = None, extra_params: Mapping[str, Any] | None = None) -> "Function":
    """Add a ``TEXT_EMBEDDING`` function (provider ``openai``, our service) to an existing collection.

    Milvus then embeds ``input_field`` on insert and text queries on search by calling
    ``base_url`` (``qvl serve``'s OpenAI-compatible endpoint). Needs a Milvus 2.6 server:
    Milvus Lite and Milvus 3.x cannot add a function to an existing collection; declare it
    at creation with :func:`text_embedding_function` instead.

    Args:
        client: a ``pymilvus.MilvusClient`` (e.g. ``store.client``).
        collection: an existing collection with a VARCHAR ``input_field`` and a
            FLOAT_VECTOR(dim) ``output_field``.
        base_url, model_name, dim, api_key, name, extra_params: as for :func:`text_embedding_function`.

    Returns:
        The ``pymilvus.Function`` that was added.

    Raises:
        ConnectorError: the server cannot add functions to existing collections (Milvus Lite,
            Milvus 3.x); the message says to use :func:`text_embedding_function` at creation.
        NotFoundError: the collection does not exist.
        SchemaMismatchError: the fields are missing or of the wrong type or dim.

    Example:
        >>> add_text_embedding_function(store.client, "photos", base_url="http://qvl:8000/v1",
        ...     model_name="Qwen3-VL-Embedding-2B", dim=1024, input_field="text",
        ...     output_field="vector")  # doctest: +SKIP
    """
    function = text_embedding_function(base_url=base_url, model_name=model_name, dim=dim, input_field=input_field,
                                       output_field=output_field, api_key=api_key, name=name,
                                       extra_params=extra_params)
    with translated("get_server_version"):
        version = str(client.get_server_version())
    if version.lower().startswith(LITE_VERSION_PREFIX):
        raise ConnectorError(
            f"Milvus Lite ({version}) cannot add a function to an existing collection ({collection!r}); "
            "declare the TEXT_EMBEDDING function when creating the collection instead: "
            "schema.add_function(text_embedding_function(...)), or use a Milvus 2.6 server")
    with translated("describe_collection", collection=collection):
        if not client.has_collection(collection):
            raise NotFoundError(f"collection {collection!r} does not exist")
        desc = client.describe_collection(collection)
    have = fields_by_name(desc)
    problems = []
    if input_field not in have or dtype_name(have[input_field]["type"]) != "VARCHAR":
        problems.append(f"input field {input_field!r} must exist and be VARCHAR")
    if output_field not in have or dtype_name(have[output_field]["type"]) != "FLOAT_VECTOR":
        problems.append(f"output field {output_field!r} must exist and be FLOAT_VECTOR")
    elif field_dim(have[output_field]) != int(dim):
        problems.append(f"output field {output_field!r} has dim {field_dim(have[output_field])}, requested {dim}")
    if problems:
        raise SchemaMismatchError(f"collection {collection!r} cannot take the function: " + "; ".join(problems))
    try:
        with warnings.catch_warnings():
            # pymilvus 3 deprecates it (FutureWarning) because Milvus 3 servers refuse it; 2.6 servers accept it.
            warnings.simplefilter("ignore", FutureWarning)
            client.add_collection_function(collection, function)
    except driver_errors() as exc:
        msg = getattr(exc, "message", None) or str(exc)
        if is_unavailable(exc):
            raise UnavailableError(f"Milvus add_collection_function failed: {msg}") from exc
        raise ConnectorError(
            f"Milvus {version} refused to add a TEXT_EMBEDDING function to {collection!r}: {msg}. "
            "Milvus 3.x cannot add functions to existing collections; declare it at creation with "
            "text_embedding_function(...)") from exc
    log.info("added TEXT_EMBEDDING function %r (%s -> %s, %s) to %r", function.name, input_field, output_field,
             base_url, collection)
    return function
