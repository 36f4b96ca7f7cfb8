"""Pure pieces of the search service: SQL builders (values only as parameters), the page token,
grouping of ANN candidates by photo, input validation."""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from facesearch.errors import InvalidArgument, NotFound
from search_service import sql, validation
from search_service.catalog import decode_page_token, encode_page_token
from search_service.domain import SearchFilter
from search_service.public_ids import PublicIds
from search_service.search import PageToken, group_by_photo, query_hash


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


def test_exact_search_sql_takes_every_value_as_a_parameter() -> None:
    hostile = "x'); DROP TABLE faces; --"
    search_filter = SearchFilter(
        metadata={"tag": hostile},
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        end_time=datetime(2025, 1, 1, tzinfo=UTC),
        photo_ids=(hostile,),
    )
    query, args = sql.exact_search(7, [vec(1)], search_filter, 0.5, sql.Cursor(0.25, 42), 11)
    assert hostile not in query and "DROP" not in query
    assert args[0] == 7 and isinstance(args[1], np.ndarray)
    assert args[2] == '{"tag": "x\'); DROP TABLE faces; --"}'
    assert args[-4:] == [0.5, 0.25, 42, 11]
    assert {int(n) for n in re.findall(r"\$(\d+)", query)} == set(range(1, len(args) + 1))


def test_multi_vector_search_uses_the_smallest_distance() -> None:
    query, args = sql.exact_search(1, [vec(1), vec(2), vec(3)], SearchFilter(), None, None, 5)
    assert "LEAST(f.embedding <=> $2, f.embedding <=> $3, f.embedding <=> $4)" in query
    assert len(args) == 5
    assert "photos p" not in query.split("FROM faces f")[1].split("WHERE")[0]  # no filter: no inner join


def test_ann_sql_orders_by_the_index_operator() -> None:
    query, args = sql.ann_candidates(3, vec(1), SearchFilter(metadata={"a": 1}), 40)
    assert "ORDER BY f.embedding <=> $2" in query
    assert "p.metadata @> $3::jsonb" in query
    assert args[-1] == 40


def test_hnsw_ddl_is_integers_only() -> None:
    ddl = sql.create_hnsw_index(12, 16, 64)
    assert "faces_hnsw_12" in ddl and "WHERE collection_id = 12" in ddl and "vector_cosine_ops" in ddl
    with pytest.raises(ValueError):
        sql.create_hnsw_index("1; DROP TABLE faces", 16, 64)  # type: ignore[arg-type]


def test_page_token_round_trip_and_binding() -> None:
    ids = PublicIds.ephemeral()
    bound = query_hash(1, [vec(1)], SearchFilter(), None)
    token = PageToken(sql.Cursor(0.125, 99), bound).encode(ids)
    assert PageToken.decode(token, bound, ids).cursor == sql.Cursor(0.125, 99)
    # Sealed: the internal photo key does not show, and another database's key cannot open it.
    assert "99" not in base64.urlsafe_b64decode(token + "==").decode(errors="replace")
    with pytest.raises(InvalidArgument, match="not a token"):
        PageToken.decode(token, bound, PublicIds.ephemeral())
    for other in (
        query_hash(2, [vec(1)], SearchFilter(), None),
        query_hash(1, [vec(2)], SearchFilter(), None),
        query_hash(1, [vec(1)], SearchFilter(photo_ids=("a",)), None),
        query_hash(1, [vec(1)], SearchFilter(), 0.5),
    ):
        with pytest.raises(InvalidArgument, match="another query"):
            PageToken.decode(token, other, ids)
    for garbage in ("", "!!!", "e30=", token[:-3]):
        with pytest.raises(InvalidArgument):
            PageToken.decode(garbage, bound, ids)


def test_collection_page_token() -> None:
    assert decode_page_token(encode_page_token("event-1")) == "event-1"
    assert decode_page_token("") == ""
    with pytest.raises(InvalidArgument):
        decode_page_token("%%%")


def test_group_by_photo_keeps_each_photos_best_face() -> None:
    rows = [
        {"photo_key": p, "face_id": f, "distance": d}
        for p, f, d in [(1, 10, 0.1), (2, 20, 0.2), (1, 11, 0.3), (3, 30, 0.4), (2, 21, 0.5)]
    ]
    assert [r["face_id"] for r in group_by_photo(rows, None, None)] == [10, 20, 30]
    # Photo 1 was on an earlier page: its second face must not bring it back.
    assert [r["face_id"] for r in group_by_photo(rows, sql.Cursor(0.1, 1), None)] == [20, 30]
    assert [r["face_id"] for r in group_by_photo(rows, None, 0.25)] == [10, 20]


def test_embedding_validation() -> None:
    v = validation.embedding([3.0, 4.0] + [0.0] * 510, 512)
    assert v.dtype == np.float32 and math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-6)
    for bad, message in (
        ([1.0] * 511, "511 values"),
        ([math.nan] + [1.0] * 511, "NaN"),
        ([math.inf] + [1.0] * 511, "NaN or infinite"),
        ([0.0] * 512, "zero norm"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            validation.embedding(bad, 512)


def test_other_validation() -> None:
    assert validation.collection_name("a.b_c-1") == "a.b_c-1"
    for bad in ("", "a b", "x" * 129, "é"):
        with pytest.raises(InvalidArgument):
            validation.collection_name(bad)
    assert validation.top_k(0, 10, 1000) == 10
    with pytest.raises(InvalidArgument):
        validation.top_k(1001, 10, 1000)
    with pytest.raises(InvalidArgument, match="bytes as JSON"):
        validation.metadata({"a": "x" * 100}, 50)
    with pytest.raises(InvalidArgument):
        validation.external_id("x" * 257)
    with pytest.raises(InvalidArgument):
        validation.similarity(1.5, "min_similarity")


def test_public_face_ids_are_opaque_and_bound_to_their_collection() -> None:
    ids = PublicIds.ephemeral()
    consecutive = [ids.face_id(7, face) for face in (1000, 1001, 1002)]
    assert len(set(consecutive)) == 3 and all(len(i) == 22 for i in consecutive)
    # Neighbouring ids share no prefix a client could read an order from.
    assert len({i[:4] for i in consecutive}) == 3
    assert [ids.parse_face_id(7, i) for i in consecutive] == [1000, 1001, 1002]
    with pytest.raises(NotFound):
        ids.parse_face_id(8, consecutive[0])  # another collection (another tenant's)
    with pytest.raises(NotFound):
        PublicIds.ephemeral().parse_face_id(7, consecutive[0])  # another database's key
    for garbage in ("", "1000", "x" * 21, "!" * 22):
        with pytest.raises(InvalidArgument):
            ids.parse_face_id(7, garbage)
