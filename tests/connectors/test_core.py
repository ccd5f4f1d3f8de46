"""Shared connector pieces: rows, ids, byte batches, the upsert pipeline and the
search-then-rerank step, exercised through the exact in-memory store."""
from __future__ import annotations

import numpy as np
import pytest

import connectors
from connectors.core import Hit, bad_vector_reason, check_dim, content_id, document_item, normalize_row, vector_problems
from connectors.pipeline import byte_batches, row_bytes
from connectors.search import rerank_candidates, rerank_hits
from embedder import InputError
from embedder.errors import NotFoundError, SchemaMismatchError

from ..conftest import make_image


def test_content_id_is_stable_and_content_based(tmp_path):
    a = {"text": "hello", "image": "/x/a.png", "metadata": {"k": 1}}
    assert content_id(a) == content_id(dict(a)) == content_id({"image": "/x/a.png", "text": "hello"})
    assert content_id(a) != content_id({"text": "hello"})
    assert content_id({"image": b"abc"}) == content_id({"image": b"abc"}) != content_id({"image": b"abd"})
    assert len(content_id(a)) == 32


@pytest.mark.parametrize("row, message", [
    ({}, "no text, image, video or vector"),
    ({"id": 1.5, "text": "x"}, "id must be a string or an integer"),
    ({"id": "a", "text": 3}, "text must be a string"),
    ({"id": "a", "vector": [1.0, 2.0]}, "vector has 2 dims, the store has 4"),
    ({"id": "a", "text": "x", "metadata": {"f": object()}}, "not JSON-serialisable"),
    ({"id": "a", "text": "x", "colour": "red", "metadata": {"colour": "blue"}},
     r"undeclared field\(s\) \['colour'\] go into metadata, which already has this key; declared fields are "
     r"\['price'\]"),
    ({"id": "a", "text": "x", "colour": object()}, r"\['colour'\] go into metadata and are not JSON-serialisable"),
])
def test_bad_rows_are_named(row, message):
    with pytest.raises(InputError, match=message) as info:
        normalize_row(row, 7, dim=4, declared_fields=["price"])
    assert info.value.index == 7


@pytest.mark.parametrize("declared", [["price"], []])
def test_undeclared_top_level_keys_go_to_metadata(declared):
    """The one field policy: declared fields stay fields, every other top-level key joins metadata."""
    row = normalize_row({"id": "a", "text": "x", "price": 3, "colour": "red", "metadata": {"year": 2020}}, 0,
                        declared_fields=declared)
    if declared:
        assert row.fields == {"price": 3} and row.metadata == {"year": 2020, "colour": "red"}
    else:
        assert row.fields == {} and row.metadata == {"year": 2020, "colour": "red", "price": 3}
    with pytest.raises(InputError, match=r"\['colour'\] go into metadata, which already has") as info:
        normalize_row({"id": "r9", "text": "x", "colour": "red", "metadata": {"colour": "blue"}}, 4,
                      declared_fields=declared)
    assert (info.value.index, info.value.item_id) == (4, "r9")
    # a caller that does not know the store's fields keeps the extras as given
    assert normalize_row({"id": "a", "text": "x", "colour": "red"}, 0).fields == {"colour": "red"}


@pytest.mark.parametrize("k, candidates, expected", [(1, None, 20), (5, None, 20), (10, None, 40), (3, 3, 3),
                                                     (3, 50, 50)])
def test_rerank_candidates_one_default(k, candidates, expected):
    assert rerank_candidates(k, candidates) == expected


@pytest.mark.parametrize("candidates, message", [(2, r"candidates must be an integer from k=3 up, got 2"),
                                                 (4.0, r"got 4\.0"), (True, "got True"), ("9", "got '9'")])
def test_bad_rerank_candidates_are_input_errors(candidates, message):
    with pytest.raises(InputError, match=message):
        rerank_candidates(3, candidates)
    assert rerank_candidates(3, None, limit=10) == 10
    with pytest.raises(InputError, match="from k=3 to 10, got 11"):
        rerank_candidates(3, 11, limit=10)


def test_non_finite_vectors_fail_alone(store):
    bad = np.ones(64, dtype=np.float32)
    bad[3] = np.nan
    inf = np.ones(64, dtype=np.float32)
    inf[0] = np.inf
    report = store.upsert([{"id": "ok", "vector": np.ones(64)}, {"id": "nan", "vector": bad},
                           {"id": "inf", "vector": inf}, {"id": "text", "text": "fine"}])
    assert sorted(report.written) == ["ok", "text"]
    assert dict(report.failed) == {"nan": "vector contains NaN or infinity", "inf": "vector contains NaN or infinity"}


def test_vector_problems_finds_zero_and_non_finite_rows():
    vecs = np.random.RandomState(0).rand(7, 16).astype(np.float32)
    vecs[1] = 0.0
    vecs[2] = -0.0
    vecs[3, 5] = np.nan
    vecs[4, 0] = -np.inf
    vecs[5] = 0.0
    vecs[5, 15] = 1e-30  # tiny but not zero: defined
    assert vector_problems(vecs).tolist() == [False, True, True, True, True, False, False]
    assert [bad_vector_reason(v) for v in vecs] == [
        None, "vector is all zeros (cosine similarity is undefined)",
        "vector is all zeros (cosine similarity is undefined)", "vector contains NaN or infinity",
        "vector contains NaN or infinity", None, None]
    assert vector_problems(np.zeros((0, 16), dtype=np.float32)).tolist() == []


def test_zero_vectors_fail_alone_and_zero_queries_are_refused(store):
    report = store.upsert([{"id": "ok", "vector": np.ones(64)}, {"id": "zero", "vector": np.zeros(64)},
                           {"id": "text", "text": "fine"}])
    assert sorted(report.written) == ["ok", "text"]
    assert report.failed == [("zero", "vector is all zeros (cosine similarity is undefined)")]
    with pytest.raises(InputError, match=r"query vector is all zeros \(cosine similarity is undefined\)"):
        store.search(np.zeros(64))
    with pytest.raises(InputError, match="query vector contains NaN or infinity"):
        store.search(np.full(64, np.nan))


@pytest.mark.parametrize("dim", [10, 63, 129, 64.0, True, "64"])
def test_check_dim_names_the_range(embedder, dim):
    with pytest.raises(InputError, match=rf"dim must be an integer from 64 to 128 .*got {dim!r}"):
        check_dim(dim, embedder)
    assert check_dim(64, embedder) == 64 and check_dim(np.int64(128), embedder) == 128
    assert check_dim(4096) == 4096  # no embedder: precomputed vectors of any size from 64


def test_strings_that_are_not_valid_unicode_do_not_stop_an_upsert(store):
    """A lone surrogate (an undecodable file name read with surrogateescape) in a text or a
    path raised UnicodeEncodeError from the id hash and the size estimate, stopping the upsert."""
    odd = "caf\udce9.txt"
    rows = [{"text": odd, "vector": np.ones(64)}, {"image": "/photos/" + odd, "vector": np.full(64, 2.0)},
            {"id": "plain", "text": "fine", "vector": np.full(64, 3.0)}]
    report = store.upsert(rows)
    assert report.ok and len(report.written) == 3 and store.count() == 3
    assert content_id(rows[0]) == content_id(dict(rows[0])) != content_id({"text": "caf\udce8.txt"})
    assert content_id({"text": "plain"}) == content_id({"text": "plain"})
    assert row_bytes(normalize_row(rows[0], 0, dim=64), 64) > 4 * 64


def test_row_modality_and_media_reference(tmp_path):
    assert normalize_row({"text": "t"}, 0).modality == "text"
    r = normalize_row({"text": "t", "image": "/a.png"}, 0)
    assert (r.modality, r.media) == ("vl", "/a.png")
    r = normalize_row({"image": b"raw"}, 0)
    assert (r.modality, r.media) == ("image", None)
    r = normalize_row({"video": "/v.mp4"}, 0)
    assert (r.modality, r.media, document_item({"media": "/v.mp4", "modality": "video"})) == \
        ("video", "/v.mp4", {"video": "/v.mp4"})


def test_byte_batches_respect_the_budget():
    rows = [normalize_row({"id": str(i), "text": "x" * 1000}, i) for i in range(10)]
    one = row_bytes(rows[0], 128)
    assert one > 4 * 128 + 1000
    groups = list(byte_batches(rows, 128, max_bytes=2 * one + 10))
    assert sorted(i for g in groups for i in g) == list(range(10))
    assert all(len(g) == 2 for g in groups)
    assert [len(g) for g in byte_batches(rows, 128, max_bytes=10**9, max_rows=4)] == [4, 4, 2]


@pytest.fixture()
def store(embedder):
    s = connectors.connect("memory:", collection="core", embedder=embedder, dim=64)
    s.create(fields={"price": float})
    yield s
    s.close()


def test_upsert_reports_bad_rows_by_id_and_lands_the_rest(store, image_files, tmp_path):
    rows = [
        {"id": "t1", "text": "a red car", "price": 1.0},
        {"id": "img", "image": image_files[0]},
        {"id": "fused", "text": "cap", "image": image_files[1]},
        {"id": "gone", "image": str(tmp_path / "missing.png")},
        {"id": "vec", "vector": np.ones(64, dtype=np.float32)},
        {"text": 5},
        {"id": "t1", "text": "a red car, again"},   # duplicate id inside the batch: the last wins
    ]
    report = store.upsert(rows, batch_size=3)
    assert sorted(report.written) == ["fused", "img", "t1", "vec"]
    failed = dict(report.failed)
    assert set(failed) == {"gone", "#5"}
    assert "file not found" in failed["gone"] and "text must be a string" in failed["#5"]
    assert store.count() == 4
    hit = [h for h in store.search([1.0] * 64, k=4) if h.id == "t1"][0]
    assert hit.fields["text"] == "a red car, again"
    # Idempotent: the same rows again leave the same count.
    store.upsert(rows)
    assert store.count() == 4


def test_every_item_finds_itself_first(store, embedder, image_files):
    rows = [{"text": "a red car"}, {"text": "stock market news"}, {"image": image_files[0]},
            {"image": image_files[2], "text": "caption"}]
    report = store.upsert(rows)
    assert report.ok and len(report.written) == 4
    for row, rid in zip(rows, report.written):
        vec = embedder.embed_documents([{k: v for k, v in row.items()}], dim=64)[0]
        assert store.search(vec, k=1)[0].id == rid
        assert store.search(vec, k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_validates_query_vectors(store):
    with pytest.raises(InputError, match="query vector has 3 dims, the store has 64"):
        store.search([1.0, 2.0, 3.0])


def test_store_must_exist_and_schema_must_match(embedder):
    s = connectors.connect("memory:", embedder=embedder, dim=64)
    with pytest.raises(NotFoundError, match="call store.create"):
        s.upsert([{"text": "x"}])
    s.create(fields={"a": int})
    with pytest.raises(SchemaMismatchError):
        s.create(fields={"a": str}, exist_ok=True)


def test_rerank_keeps_unloadable_candidates_at_their_vector_rank(reranker, image_files, tmp_path):
    gone = tmp_path / "deleted.png"
    make_image(50, 50).save(gone)
    candidates = [
        Hit("a", 0.9, fields={"text": "red car", "media": None, "modality": "text"}),
        Hit("b", 0.8, fields={"text": None, "media": str(gone), "modality": "image"}),
        Hit("c", 0.7, fields={"text": "caption", "media": image_files[0], "modality": "vl"}),
        Hit("d", 0.6, fields={"text": None, "media": None, "modality": "image"}),  # nothing to rerank with
        Hit("e", 0.5, fields={"text": "a red car", "media": None, "modality": "text"}),
    ]
    gone.unlink()
    out = rerank_hits(reranker, "a red car", candidates, k=5)
    ids = [h.id for h in out.hits]
    assert ids[-2:] == ["b", "d"]                      # kept, in vector order, after the reranked ones
    assert {h.id for h in out.hits} == {"a", "b", "c", "d", "e"}
    reranked = [h for h in out.hits if h.rerank_score is not None]
    assert [h.rerank_score for h in reranked] == sorted((h.rerank_score for h in reranked), reverse=True)
    assert dict(out.failed).keys() == {"b", "d"}
    assert "file not found" in dict(out.failed)["b"]
    # Vector scores survive reranking.
    assert {h.id: h.score for h in out.hits} == {c.id: c.score for c in candidates}
    assert len(rerank_hits(reranker, "a red car", candidates, k=2).hits) == 2


def test_search_then_rerank_through_a_store(store, reranker, image_files):
    store.upsert([{"id": str(i), "text": t} for i, t in enumerate(
        ["a red car", "a blue car", "stock market", "weather today", "red apples"])])
    hits = store.search("red car", k=3, rerank=reranker, candidates=5)
    assert len(hits) == 3 and all(h.rerank_score is not None for h in hits)
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)
    expected = reranker.score("red car", [store.search("red car", k=5)[i].fields["text"] for i in range(5)])
    assert hits[0].rerank_score == pytest.approx(float(expected.max()), abs=1e-4)


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ValueError, match="scheme 'redis' is not one of"):
        connectors.connect("redis://x")


def test_an_embedder_outage_fails_the_batch_as_transient_without_splitting_it(embedder):
    from embedder.errors import RemoteError

    class Away:
        dim = embedder.dim

        def __init__(self) -> None:
            self.calls: list[int] = []

        def embed_documents(self, items, **kwargs):
            self.calls.append(len(items))
            raise RemoteError("POST /v1/embed failed: ConnectError", code="unavailable")

    away = Away()
    s = connectors.connect("memory:", embedder=away, dim=64)
    s.create()
    report = s.upsert([{"id": "a", "text": "one"}, {"id": "b", "text": "two"}])
    assert report.written == [] and [f.id for f in report.failed] == ["a", "b"]
    assert all(f.transient and f.stage == "embed" for f in report.failed) and away.calls == [2]
