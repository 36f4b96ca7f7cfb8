"""The embedder client's channel configuration, its per-call deadline, and how embedder failures
become domain errors."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest

from facesearch.deadline import set_call_deadline
from facesearch.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from facesearch.v1 import face_pb2
from search_service.config import EmbedderClientSettings
from search_service.domain import EmbedOptions
from search_service.embedder_client import (
    EmbedderClient,
    _error_of,
    face_from_proto,
    options_to_proto,
    service_config,
)


def test_service_config_balances_over_serving_addresses() -> None:
    config = json.loads(service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "facesearch.v1.EmbedderService"}


def test_embedder_failures_map_to_domain_errors() -> None:
    assert isinstance(_error_of(grpc.StatusCode.INVALID_ARGUMENT, "not an image", "t"), InvalidArgument)
    assert isinstance(_error_of(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", "t"), ResourceExhausted)
    assert isinstance(_error_of(grpc.StatusCode.DEADLINE_EXCEEDED, "", "t"), DeadlineExceeded)
    down = _error_of(grpc.StatusCode.UNAVAILABLE, "connection refused", "dns:///embedder:50051")
    assert isinstance(down, Unavailable)
    assert "dns:///embedder:50051" in down.message and "nothing was written" in down.message


def test_options_and_faces_convert() -> None:
    message = options_to_proto(EmbedOptions(max_faces=3, min_face_size=40.0))
    assert message.max_faces == 3 and message.min_face_size == 40.0
    assert not message.HasField("min_blur_score")  # unset stays unset: the embedder's default applies
    face = face_pb2.Face(
        box=face_pb2.BoundingBox(x1=1, y1=2, x2=3, y2=4),
        det_score=0.9,
        quality=face_pb2.Quality(passed=False, failures=[face_pb2.QUALITY_FAILURE_BLURRY]),
        embedding=[0.6, 0.8],
        landmarks=[face_pb2.Point(x=1, y=2)],
    )
    converted = face_from_proto(face)
    assert converted.box.as_list() == [1, 2, 3, 4]
    assert converted.quality.failures == ("QUALITY_FAILURE_BLURRY",)
    assert converted.embedding.dtype == np.float32 and converted.landmarks == (1.0, 2.0)


async def _timeout_in_a_served_call(time_remaining_s: float | None, timeout_s: float = 30.0) -> float:
    """The embedder call's timeout when the served call has `time_remaining_s` left. Each served
    RPC runs in a task of its own, as here, so the deadline does not leak between calls."""
    client = EmbedderClient("127.0.0.1:1", EmbedderClientSettings(timeout_s=timeout_s), 1 << 20)

    async def served() -> float:
        set_call_deadline(time_remaining_s)
        return client._timeout_s()

    try:
        return await asyncio.create_task(served())
    finally:
        await client.close()


async def test_each_embedder_call_ends_inside_the_callers_deadline() -> None:
    assert await _timeout_in_a_served_call(None) == 30.0  # no caller deadline: the configured one
    assert await _timeout_in_a_served_call(100.0) == 30.0  # a far deadline does not lengthen it
    assert 1.8 < await _timeout_in_a_served_call(2.0) < 2.0  # a near one shortens it
    with pytest.raises(DeadlineExceeded):
        await _timeout_in_a_served_call(0.01)  # nothing left: fail at once, don't call the embedder
