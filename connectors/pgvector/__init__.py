"""Postgres/pgvector connector: multimodal search in new tables and in the tables you already have.

Two layouts share one store class, :class:`PgVectorStore`:

* **a new table** (``open_store(url, table="photos", embedder=emb, dim=1024).create()``): columns
  ``id text PRIMARY KEY, text, media, modality, metadata jsonb``, the declared fields, and
  ``embedding``;
* **an existing table** (:func:`attach`): an embedding column added to the table
  (``mode="column"``) or a side table keyed by its primary key (``mode="side_table"``), its
  index, and a backfill of the rows that have no embedding yet. :mod:`connectors.pgvector.sync`
  then keeps it in sync with triggers and a worker.

The storage follows the dimension and pgvector's index limits (see :func:`plan_storage`):

=================  ====================  ==========================================
dim                column                index
=================  ====================  ==========================================
<= 2000            ``vector(d)``         HNSW ``vector_cosine_ops``
2001..4000         ``halfvec(d)``        HNSW ``halfvec_cosine_ops``
> 4000             ``vector(d)``         HNSW on ``subvector(embedding, 1, p)`` (MRL
                                         prefix), shortlist re-scored exactly
``binary``         ``vector(d)``         HNSW on ``binary_quantize(embedding)::bit(d)``,
                                         shortlist re-scored exactly
``exact``          ``vector(d)``         none (exact scan)
=================  ====================  ==========================================

Identifiers are validated against :data:`IDENTIFIER_RE` and quoted with ``psycopg.sql``;
values are bound parameters. ``psycopg``, ``pgvector`` and ``sqlalchemy`` are imported only
inside the functions that need them. The SQLAlchemy helpers (:func:`embedding_type`,
:func:`embedding_mixin`, :func:`cosine_distance`, :func:`index_distance`,
:func:`register_vector_on`) return plain SQLAlchemy objects to compose with your own queries.

The package, bottom to top (each module imports only those above it in this list):

* :mod:`~connectors.pgvector.wire`: connections, driver errors, pgvector's binary COPY
  format, raw ``where=`` escaping and the portable filter as SQL;
* :mod:`~connectors.pgvector.schema`: identifiers and table names, storage plans, layouts,
  column introspection, field types, the sync objects' names;
* :mod:`~connectors.pgvector.statements`: the SQL a store runs, built from its layout and plan;
* :mod:`~connectors.pgvector.store`: :class:`PgVectorStore`, the store skeleton
  (:class:`connectors.base.BaseStore`) on PostgreSQL;
* :mod:`~connectors.pgvector.factories`: :func:`open_store` and :func:`attach`;
* :mod:`~connectors.pgvector.sqlalchemy`: the SQLAlchemy helpers (needs only ``schema``);
* :mod:`~connectors.pgvector.triggers` and :mod:`~connectors.pgvector.sync`: the sync's queue
  and triggers, and the worker;
* :mod:`~connectors.pgvector.cli`: ``qvl pg sync / worker / status``.

Example::

    from connectors.pgvector import attach
    store = attach("postgresql://app@db/shop", table="products", primary_key="id",
                   text_column="title", image_column="photo_path", embedder=emb, dim=1024)
    hits = store.search("red running shoes", k=5, where="price < %(max)s", params={"max": 100})
"""
from __future__ import annotations

from .factories import attach, open_store
from .schema import (  # noqa: F401 - the constants and helpers the one-file module offered are kept importable
    FIELD_TYPES, IDENTIFIER_RE, MODES, NATIVE_COLUMNS, RESERVED_COLUMNS, SQL_FIELD_TYPES, STORAGES, ColumnInfo, Layout,
    StoragePlan, TableName, derived_name, plan_storage, primary_key_of, resolve_table, table_columns,
    validate_identifier)
from .sqlalchemy import (cosine_distance, cosine_similarity, embedding_index, embedding_mixin, embedding_type,
                         index_distance, register_vector_on)
from .store import PgVectorStore
from .wire import compile_filter, connect_pg, escape_where, vector_wire  # noqa: F401 - as above

__all__ = ["PgVectorStore", "StoragePlan", "Layout", "TableName", "open_store", "attach", "plan_storage",
           "validate_identifier", "connect_pg", "embedding_type", "embedding_index", "embedding_mixin",
           "cosine_distance", "cosine_similarity", "index_distance", "register_vector_on"]
