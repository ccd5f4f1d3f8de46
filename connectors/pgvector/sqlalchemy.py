"""SQLAlchemy helpers: embedding columns, indexes and distances for your own models and queries.

:func:`embedding_type`, :func:`embedding_index`, :func:`embedding_mixin`,
:func:`cosine_distance`, :func:`cosine_similarity`, :func:`index_distance` and
:func:`register_vector_on` return plain SQLAlchemy objects (``sqlalchemy`` and
``pgvector.sqlalchemy`` are imported only when called), with the storage rules of
:func:`~connectors.pgvector.schema.plan_storage`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from embedder.errors import MissingDependencyError

from .schema import derived_name, plan_storage, validate_identifier


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
        import pgvector.sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "sqlalchemy", "pgvector", "The SQLAlchemy helpers") from exc
    return sqlalchemy


def embedding_type(dim: int, *, storage: str = "auto") -> Any:
    """The SQLAlchemy column type for embeddings of ``dim`` (``VECTOR(d)`` or ``HALFVEC(d)``).

    Example:
        >>> embedding_type(3000)  # doctest: +SKIP
        HALFVEC(dim=3000)
    """
    _sqlalchemy()
    from pgvector.sqlalchemy import HALFVEC, VECTOR

    plan = plan_storage(dim, storage)
    return HALFVEC(plan.dim) if plan.column_type == "halfvec" else VECTOR(plan.dim)


def embedding_index(table_name: str, *, dim: int, storage: str = "auto", column: str = "embedding",
                    index_dim: int | None = None, m: int = 16, ef_construction: int = 64) -> Any:
    """An SQLAlchemy ``Index`` (HNSW, cosine) for an embedding column; put it in ``__table_args__``."""
    sa = _sqlalchemy()
    plan = plan_storage(dim, storage, index_dim=index_dim, m=m, ef_construction=ef_construction)
    validate_identifier(column, what="column")
    name = derived_name(f"{table_name}_{column}_{plan.storage}_idx")
    opts = {"postgresql_using": "hnsw", "postgresql_with": {"m": plan.m, "ef_construction": plan.ef_construction}}
    if plan.storage in ("vector", "halfvec"):
        return sa.Index(name, column, postgresql_ops={column: plan.opclass}, **opts)
    expr = {"subvector": f"(subvector({column}, 1, {plan.index_dim})::{plan.prefix_type}({plan.index_dim}))",
            "binary": f"(binary_quantize({column})::bit({plan.dim}))"}[plan.storage]
    return sa.Index(name, sa.text(f"{expr} {plan.opclass}"), **opts)


def embedding_mixin(dim: int, *, storage: str = "auto", column: str = "embedding", nullable: bool = True,
                    index: bool = True, index_dim: int | None = None) -> type:
    """A declarative mixin giving an ORM model an embedding column of the right type (and index).

    The mixin defines ``__table_args__`` with the HNSW index when ``index=True``; a model with its
    own ``__table_args__`` should add :func:`embedding_index` there instead.

    Example:
        >>> class Product(embedding_mixin(1024), Base):  # doctest: +SKIP
        ...     __tablename__ = "products"
        ...     id: Mapped[int] = mapped_column(primary_key=True)
        >>> select(Product).order_by(Product.embedding.cosine_distance(vec)).limit(5)  # doctest: +SKIP
    """
    _sqlalchemy()
    from sqlalchemy.orm import declared_attr, mapped_column

    validate_identifier(column, what="column")
    plan = plan_storage(dim, storage, index_dim=index_dim)
    col_type = embedding_type(dim, storage=storage)
    attrs: dict[str, Any] = {
        column: declared_attr(lambda cls: mapped_column(column, col_type, nullable=nullable)),
        "__qvl_plan__": plan,
        "__doc__": f"Mixin: a {plan.column_sql} column {column!r} (storage {plan.storage!r}).",
    }
    if index:
        attrs["__table_args__"] = declared_attr.directive(lambda cls: (embedding_index(
            cls.__tablename__, dim=dim, storage=storage, column=column, index_dim=index_dim),))
    return type(f"EmbeddingMixin{plan.dim}", (), attrs)


def cosine_distance(column: Any, vector: Any) -> Any:
    """``column <=> vector`` as an SQLAlchemy expression (exact cosine distance)."""
    _sqlalchemy()
    return column.cosine_distance(np.asarray(vector, dtype=np.float32))


def cosine_similarity(column: Any, vector: Any) -> Any:
    """``1 - (column <=> vector)``, labelled ``score``."""
    return (1 - cosine_distance(column, vector)).label("score")


def index_distance(column: Any, vector: Any, *, dim: int, storage: str = "auto", index_dim: int | None = None) -> Any:
    """The distance the HNSW index ranks by, to ``ORDER BY`` a shortlist.

    Equal to :func:`cosine_distance` for ``vector``/``halfvec`` storage; for ``subvector`` and
    ``binary`` storage it is the indexed approximation (prefix cosine or Hamming distance): order
    a shortlist by it, then order the shortlist by :func:`cosine_distance`.
    """
    sa = _sqlalchemy()
    from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR

    plan = plan_storage(dim, storage, index_dim=index_dim)
    vec = np.asarray(vector, dtype=np.float32)
    if plan.storage == "subvector":
        typ = VECTOR(plan.index_dim) if plan.prefix_type == "vector" else HALFVEC(plan.index_dim)
        prefix = lambda e: sa.cast(sa.func.subvector(e, 1, plan.index_dim, type_=VECTOR()), typ)  # noqa: E731
        return prefix(column).op("<=>", return_type=sa.Float)(prefix(sa.cast(vec, VECTOR(plan.dim))))
    if plan.storage == "binary":
        quant = lambda e: sa.cast(sa.func.binary_quantize(e, type_=BIT()), BIT(plan.dim))  # noqa: E731
        return quant(column).op("<~>", return_type=sa.Float)(sa.func.binary_quantize(sa.cast(vec, VECTOR(plan.dim)),
                                                                                        type_=BIT()))
    return cosine_distance(column, vec)


def register_vector_on(engine: Any) -> Any:
    """Register pgvector's psycopg types on every connection of a SQLAlchemy engine (sync or
    async, ``postgresql+psycopg://``), so vectors can be bound and read as pgvector objects.
    Returns the engine.

    Example:
        >>> engine = register_vector_on(create_async_engine("postgresql+psycopg://localhost/app"))  # doctest: +SKIP
    """
    sa = _sqlalchemy()
    sync_engine = getattr(engine, "sync_engine", engine)

    @sa.event.listens_for(sync_engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "run_async"):
            from pgvector.psycopg import register_vector_async

            dbapi_connection.run_async(register_vector_async)
        else:
            from pgvector.psycopg import register_vector

            register_vector(dbapi_connection)

    return engine
