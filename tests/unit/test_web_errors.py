"""facesearch.web.errors: every gRPC status becomes an HTTP status and words a person can read;
the service's own detail is kept where it helps and hidden where it is an internal failure."""

from __future__ import annotations

import grpc
import pytest

from facesearch.web import errors


@pytest.mark.parametrize(
    ("code", "details", "http_status", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "image is empty", 400, "Image is empty."),
        (grpc.StatusCode.NOT_FOUND, "collection 'x' not found", 404, "Collection 'x' not found."),
        (grpc.StatusCode.ALREADY_EXISTS, "", 409, "already exists"),
        (grpc.StatusCode.UNAUTHENTICATED, "no key", 401, "The API key is missing or was not accepted. (no key)"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses",
            503,
            "The search service is unavailable; try again in a moment. (failed to connect to all addresses)",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", 504, "The search service took too long to answer; try again."),
        (grpc.StatusCode.INTERNAL, "KeyError at repository.py:12", 502, "The search service failed; see its log."),
        (grpc.StatusCode.UNKNOWN, "Traceback ...", 502, "The search service failed; see its log."),
    ],
)
def test_grpc_status_to_plain_words(code: grpc.StatusCode, details: str, http_status: int, message: str) -> None:
    error = errors.from_grpc(code, details)
    assert (error.http_status, error.code, error.message) == (http_status, code.name, message)
    assert error.body() == {"error": {"code": code.name, "message": message}}


def test_stream_item_status_numbers_map_like_call_codes() -> None:
    assert errors.from_status(3, "bytes are not an image").message == "Bytes are not an image."
    assert errors.from_status(14, "").http_status == 503
    assert errors.from_status(999, "odd").code == "UNKNOWN"


def test_no_face_and_size_sentences() -> None:
    assert errors.no_face("no face detected") == "No face found in the picture: no face detected."
    too_large = errors.too_large(25_000_000, 20_971_520)
    assert (too_large.http_status, too_large.message) == (413, "The image is too large (25.0 MB; at most 21.0 MB).")
