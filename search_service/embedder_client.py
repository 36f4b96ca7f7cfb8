"""The search service's client of the embedder: one channel with round_robin over every resolved
address and retries of UNAVAILABLE in its service config, a deadline on every call, and embedder
failures turned into domain errors (embedder down -> Unavailable with a clear message)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from facesearch.errors import (
    DeadlineExceeded,
    FaceSearchError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from facesearch.tls import aio_channel
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2
from search_service.config import EmbedderClientSettings
from search_service.domain import Box, DetectedFace, EmbedOptions, FaceQuality
from search_service.metrics import EMBEDDER_CALL_LATENCY

EMBEDDER_SERVICE = "facesearch.v1.EmbedderService"
# How often a stream reader wakes up to check the oldest image's deadline.
IDLE_TICK_S = 1.0


def service_config(max_attempts: int) -> str:
    """The channel's service config: balance calls over all addresses (a headless Service's pods)
    and let the channel retry calls the embedder answered UNAVAILABLE (a pod going away)."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": EMBEDDER_SERVICE}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class EmbedItem:
    request_id: str
    image: bytes
    options: EmbedOptions


@dataclass(frozen=True)
class EmbedOutcome:
    request_id: str
    faces: list[DetectedFace]
    error: FaceSearchError | None = None


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
        self._channel = aio_channel(
            target,
            settings.tls,
            [
                ("grpc.service_config", service_config(settings.max_attempts)),
                ("grpc.enable_retries", 1),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
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

    async def embed(self, image: bytes, options: EmbedOptions) -> list[DetectedFace]:
        """Faces of one image, largest and most central first."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request = embedder_pb2.EmbedRequest(
            input=embedder_pb2.ImageInput(encoded_image=image), options=options_to_proto(options)
        )
        try:
            reply = await self._stub.Embed(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._fail(exc) from None
        finally:
            EMBEDDER_CALL_LATENCY.labels("Embed", code.name).observe(time.perf_counter() - started)
        return [face_from_proto(f) for f in reply.faces]

    async def embed_stream(self, items: AsyncIterator[EmbedItem]) -> AsyncIterator[EmbedOutcome]:
        """Embeds a stream of images through EmbedStream, yielding one outcome per item as the
        embedder finishes it. At most `max_in_flight` items are in the embedder at once. When the
        stream breaks (embedder down, no answer within the deadline) every item in flight gets the
        error, and the next items go through a fresh stream."""
        # A pump decouples the caller's iterator from the per-stream writers, so a broken stream's
        # writer can be cancelled without cancelling (and so closing) the caller's iterator.
        queue: asyncio.Queue[EmbedItem | None] = asyncio.Queue(maxsize=1)

        async def pump() -> None:
            try:
                async for item in items:
                    await queue.put(item)
            finally:
                await queue.put(None)

        pump_task = asyncio.create_task(pump())
        exhausted = False
        try:
            while not exhausted:
                state = _Round(self._settings.max_in_flight, self._stub.EmbedStream())
                in_flight = state.in_flight
                call = state.call
                failure: FaceSearchError | None = None
                writer_task = asyncio.create_task(state.write_from(queue))
                read: asyncio.Future | None = None
                try:
                    while True:
                        if state.writing_done.is_set() and not in_flight:
                            break
                        timeout = IDLE_TICK_S
                        if in_flight:
                            waited = time.perf_counter() - min(in_flight.values())
                            if waited >= self._settings.timeout_s:
                                failure = DeadlineExceeded(
                                    f"the embedder at {self.target} did not answer within {self._settings.timeout_s:g}s"
                                )
                                break
                            timeout = min(IDLE_TICK_S, self._settings.timeout_s - waited)
                        # One read stays pending across wake-ups: cancelling a read would end the call.
                        if read is None:
                            read = asyncio.ensure_future(call.read())
                        waiter = asyncio.ensure_future(state.writing_done.wait())
                        done, _ = await asyncio.wait(
                            {read, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                        )
                        waiter.cancel()
                        if read not in done:
                            continue  # a tick, or the writer finished: re-check the loop's conditions
                        response, read = read.result(), None
                        if response is grpc.aio.EOF:
                            if in_flight or not state.writing_done.is_set():
                                failure = Unavailable(f"the embedder at {self.target} closed the stream early")
                            break
                        started = in_flight.pop(response.request_id, None)
                        if started is None:
                            continue  # not a request of ours: ignore it rather than trust it
                        state.slots.release()
                        code = _code_of(response.status.code)
                        EMBEDDER_CALL_LATENCY.labels("EmbedStream", code.name).observe(time.perf_counter() - started)
                        if code is grpc.StatusCode.OK:
                            yield EmbedOutcome(response.request_id, [face_from_proto(f) for f in response.faces])
                        else:
                            error = _error_of(code, response.status.message, self.target)
                            yield EmbedOutcome(response.request_id, [], error)
                except grpc.aio.AioRpcError as exc:
                    failure = self._fail(exc)
                finally:
                    if read is not None and not read.done():
                        read.cancel()
                    if not writer_task.done():
                        writer_task.cancel()
                    await asyncio.gather(writer_task, return_exceptions=True)
                    call.cancel()  # a no-op once the call has ended; frees it on every other way out
                exhausted = state.exhausted
                if failure is None:
                    continue
                if in_flight:
                    for request_id, started in list(in_flight.items()):
                        EMBEDDER_CALL_LATENCY.labels("EmbedStream", failure.code.name).observe(
                            time.perf_counter() - started
                        )
                        yield EmbedOutcome(request_id, [], failure)
                elif state.consumed == 0 and not exhausted:
                    # The stream broke before taking anything: fail the next item, so that every
                    # round makes progress and a dead embedder cannot make this loop spin.
                    item = await queue.get()
                    if item is None:
                        exhausted = True
                    else:
                        yield EmbedOutcome(item.request_id, [], failure)
        finally:
            pump_task.cancel()
            await asyncio.gather(pump_task, return_exceptions=True)


class _Round:
    """State of one EmbedStream call of `embed_stream`: what is in flight and the writer."""

    def __init__(self, max_in_flight: int, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.in_flight: dict[str, float] = {}
        self.slots = asyncio.Semaphore(max_in_flight)
        self.writing_done = asyncio.Event()
        self.consumed = 0
        self.exhausted = False

    async def write_from(self, queue: asyncio.Queue[EmbedItem | None]) -> None:
        try:
            while True:
                await self.slots.acquire()
                item = await queue.get()
                if item is None:
                    self.exhausted = True
                    await self.call.done_writing()
                    return
                self.consumed += 1
                self.in_flight[item.request_id] = time.perf_counter()
                await self.call.write(
                    embedder_pb2.EmbedStreamRequest(
                        request_id=item.request_id,
                        input=embedder_pb2.ImageInput(encoded_image=item.image),
                        options=options_to_proto(item.options),
                    )
                )
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the reader sees the call's error
        finally:
            self.writing_done.set()


def _code_of(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)
