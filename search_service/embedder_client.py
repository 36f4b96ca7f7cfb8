"""The search service's client of the embedder: one unary Embed call per image, balanced
round_robin over every address the target resolves to (a headless Service's pods), each call with
a deadline inside the served call's, a bounded retry with jittered backoff on another pod when one
goes away, and embedder failures turned into domain errors."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import grpc
import numpy as np

from facesearch import deadline
from facesearch.errors import (
    DeadlineExceeded,
    FaceSearchError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from facesearch.tls import ClientTlsSettings, ReloadingChannel, aio_channel
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2
from search_service.config import EmbedderClientSettings
from search_service.domain import Box, DetectedFace, EmbedOptions, FaceQuality
from search_service.metrics import EMBEDDER_CALL_LATENCY, EMBEDDER_RETRIES

EMBEDDER_SERVICE = "facesearch.v1.EmbedderService"
# Kept back from the served call's remaining time, so an embedder call that runs out still leaves
# time to answer the caller with the embedder's status rather than the caller's own timeout.
DEADLINE_MARGIN_S = 0.05
# Retry backoff: full jitter over initial * 2^attempt, capped.
RETRY_INITIAL_BACKOFF_S = 0.05
RETRY_MAX_BACKOFF_S = 1.0
# Embedder status codes that mean "this pod could not take the call": another pod may.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


def service_config() -> str:
    """round_robin over every resolved address; health-checked, so a pod that is up but not
    SERVING (loading models, draining on SIGTERM) gets no calls, and one gets calls as soon as it
    reports SERVING. Retries are the client's own (see EmbedderClient.embed): gRPC's retry policy
    keeps at most 256 KiB of a call for a retry, less than one photo."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": EMBEDDER_SERVICE},
        }
    )


def channel_options(settings: EmbedderClientSettings, max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", service_config()),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's reconnect backoff grows to 120 s by default: an embedder back after an outage
        # would wait that long for traffic. Capped, it gets calls within about a second.
        ("grpc.initial_reconnect_backoff_ms", int(settings.reconnect_backoff_min_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(settings.reconnect_backoff_min_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(settings.reconnect_backoff_max_s * 1000)),
        # A new pod behind a headless Service is found when the name is resolved again (default
        # at most every 30 s).
        ("grpc.dns_min_time_between_resolutions_ms", int(settings.reconnect_backoff_max_s * 1000)),
    ]


def create_channel(
    target: str, options: list[tuple[str, object]], tls: ClientTlsSettings | None = None
) -> grpc.aio.Channel | ReloadingChannel:
    """The one place the embedder channel is made: plaintext, or TLS/mTLS whose files are reloaded
    when cert-manager renews them (facesearch.tls)."""
    return aio_channel(target, tls, options)


@dataclass(frozen=True)
class ModelInfo:
    pack_name: str
    embedding_size: int


def options_to_proto(options: EmbedOptions) -> face_pb2.EmbedOptions:
    message = face_pb2.EmbedOptions(
        max_faces=options.max_faces, disable_quality_gates=options.disable_quality_gates, return_landmarks=True
    )
    for name in ("detection_threshold", "min_det_score", "min_face_size", "min_blur_score", "max_pose_angle"):
        value = getattr(options, name)
        if value is not None:
            setattr(message, name, value)
    return message


def face_from_proto(face: face_pb2.Face) -> DetectedFace:
    q = face.quality
    return DetectedFace(
        box=Box(face.box.x1, face.box.y1, face.box.x2, face.box.y2),
        det_score=face.det_score,
        quality=FaceQuality(
            blur_score=q.blur_score,
            face_size=q.face_size,
            yaw=q.yaw,
            pitch=q.pitch,
            roll=q.roll,
            score=q.score,
            passed=q.passed,
            failures=tuple(face_pb2.QualityFailure.Name(f) for f in q.failures),
        ),
        embedding=np.asarray(face.embedding, dtype=np.float32),
        landmarks=tuple(v for p in face.landmarks for v in (p.x, p.y)),
    )


def _error_of(code: grpc.StatusCode, details: str, target: str) -> FaceSearchError:
    """A domain error for an embedder failure, worded for the search service's caller."""
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details or "invalid image")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"the embedder is overloaded: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the embedder at {target} did not answer in time")
    return Unavailable(f"the embedder at {target} is unavailable ({code.name}: {details}); nothing was written")


class EmbedderClient:
    def __init__(self, target: str, settings: EmbedderClientSettings, max_message_bytes: int) -> None:
        self.target = target
        self._settings = settings
        self._channel = create_channel(target, channel_options(settings, max_message_bytes), settings.tls)
        self._stub = embedder_pb2_grpc.EmbedderServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    def _fail(self, exc: grpc.aio.AioRpcError) -> FaceSearchError:
        return _error_of(exc.code(), exc.details() or "", self.target)

    async def model_info(self, timeout_s: float | None = None) -> ModelInfo:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            reply = await self._stub.GetModelInfo(
                embedder_pb2.GetModelInfoRequest(), timeout=timeout_s or self._settings.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._fail(exc) from None
        finally:
            EMBEDDER_CALL_LATENCY.labels("GetModelInfo", code.name).observe(time.perf_counter() - started)
        return ModelInfo(reply.pack_name, reply.embedding_size)

    def _timeout_s(self) -> float:
        """This call's deadline: the configured one, within what is left of the served call's."""
        left = deadline.remaining_s()
        if left is None:
            return self._settings.timeout_s
        left -= DEADLINE_MARGIN_S
        if left <= 0:
            raise DeadlineExceeded("the call's deadline passed before the embedder was called")
        return min(self._settings.timeout_s, left)

    async def embed(self, image: bytes, options: EmbedOptions) -> list[DetectedFace]:
        """Faces of one image, largest and most central first. A call the embedder could not take
        (UNAVAILABLE: a pod stopped or died) is retried with jittered backoff, and round_robin
        sends the retry to the next pod; only when no attempt succeeds is the image UNAVAILABLE."""
        request = embedder_pb2.EmbedRequest(
            input=embedder_pb2.ImageInput(encoded_image=image), options=options_to_proto(options)
        )
        attempts = self._settings.max_attempts
        for attempt in range(attempts):
            timeout = self._timeout_s()
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                reply = await self._stub.Embed(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in RETRYABLE or attempt == attempts - 1:
                    raise self._fail(exc) from None
            else:
                return [face_from_proto(f) for f in reply.faces]
            finally:
                EMBEDDER_CALL_LATENCY.labels("Embed", code.name).observe(time.perf_counter() - started)
            EMBEDDER_RETRIES.inc()
            backoff = min(RETRY_MAX_BACKOFF_S, RETRY_INITIAL_BACKOFF_S * 2**attempt)
            await asyncio.sleep(random.uniform(0, backoff))
        raise AssertionError("unreachable: the last attempt returns or raises")
