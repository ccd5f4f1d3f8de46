"""An SQLAlchemy ORM model with an embedding column, searched with your own WHERE / ORDER BY.

    python examples/pg_orm.py [--dsn postgresql://...] [--model Qwen/Qwen3-VL-Embedding-2B]
    python examples/pg_orm.py --offline-test-model      # no download; random results

Creates ``qvl_example_products`` (an ``embedding_mixin`` column + HNSW index), embeds the
product titles, then runs a composed query: price filter, ordered by cosine distance.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_common import choose_dim, database, example_parser, load_embedder  # noqa: E402

TABLE = "qvl_example_products"
PRODUCTS = [("red running shoes", 90), ("blue denim jacket", 120), ("red wool scarf", 25),
            ("green garden hose", 30), ("crimson trail sneakers", 140), ("yellow rain boots", 60)]


def make_model(dim: int) -> tuple[Any, Any]:
    """The declarative base and a ``Product`` model with a ``dim``-sized embedding column."""
    from connectors.pgvector import embedding_mixin

    class Base(DeclarativeBase):
        pass

    class Product(embedding_mixin(dim), Base):   # embedding VECTOR(dim) (HALFVEC above 2000) + HNSW index
        __tablename__ = TABLE
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        title: Mapped[str] = mapped_column(String)
        price: Mapped[int] = mapped_column(Integer)

    return Base, Product


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace = example_parser(__doc__.splitlines()[0]).parse_args(argv)
    from connectors.pgvector import connect_pg, cosine_distance, cosine_similarity, register_vector_on

    with database(args.dsn) as dsn, load_embedder(args) as emb:
        dim = choose_dim(args, emb)
        Base, Product = make_model(dim)
        conn, _ = connect_pg(dsn)   # creates the vector extension if missing (needs the privilege once)
        conn.close()
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1).replace("postgres://", "postgresql+psycopg://", 1)
        engine = register_vector_on(create_engine(url))
        try:
            Base.metadata.drop_all(engine)
            Base.metadata.create_all(engine)
            vectors = emb.embed_documents([title for title, _ in PRODUCTS], dim=dim)
            with Session(engine) as session:
                session.add_all([Product(id=i, title=t, price=p, embedding=v)
                                 for i, ((t, p), v) in enumerate(zip(PRODUCTS, vectors))])
                session.commit()
                q = emb.embed_queries(["red shoes for running"], dim=dim)[0]
                stmt = (select(Product, cosine_similarity(Product.embedding, q))
                        .where(Product.price < 100)                       # your WHERE
                        .order_by(cosine_distance(Product.embedding, q))  # or Product.embedding.cosine_distance(q)
                        .limit(3))
                print(f"products under 100 closest to 'red shoes for running' (dim {dim}):")
                for product, score in session.execute(stmt):
                    print(f"  {product.id}  {product.title:<24} {product.price:>4}  score={score:.3f}")
        finally:
            if not args.keep:
                Base.metadata.drop_all(engine)
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
