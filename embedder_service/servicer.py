"""EmbedderService's gRPC handlers: convert protobuf <-> domain types and nothing else; the work is
the engine's and errors become status codes in facesearch.serving's interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.rpc import status_pb2

from embedder_service import domain
from embedder_service.engine import Engine
from facesearch import wire
from facesearch.errors import FaceSearchError, InvalidArgument, Unavailable, status_of
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2

_FAILURES = {
    domain.QualityFailure.LOW_DETECTION_SCORE: face_pb2.QUALITY_FAILURE_LOW_DETECTION_SCORE,
    domain.QualityFailure.FACE_TOO_SMALL: face_pb2.QUALITY_FAILURE_FACE_TOO_SMALL,
    domain.QualityFailure.BLURRY: face_pb2.QUALITY_FAILURE_BLURRY,
    domain.QualityFailure.EXTREME_POSE: face_pb2.QUALITY_FAILURE_EXTREME_POSE,
}


def image_input_from_proto(message: embedder_pb2.ImageInput) -> domain.ImageInput:
    source = message.WhichOneof("source")
    if source == "encoded_image":
        return domain.ImageInput(domain.InputKind.PHOTO, message.encoded_image)
    if source == "aligned_face":
        return domain.ImageInput(domain.InputKind.ALIGNED_FACE, message.aligned_face)
    raise InvalidArgument("input must set encoded_image or aligned_face")


def options_from_proto(message: face_pb2.EmbedOptions) -> domain.RequestOptions:
    def optional(name: str) -> float | None:
        return getattr(message, name) if message.HasField(name) else None

    return domain.RequestOptions(
        max_faces=message.max_faces,
        detection_threshold=optional("detection_threshold"),
        min_det_score=optional("min_det_score"),
        min_face_size=optional("min_face_size"),
        min_blur_score=optional("min_blur_score"),
        max_pose_angle=optional("max_pose_angle"),
        disable_quality_gates=message.disable_quality_gates,
        return_aligned_crops=message.return_aligned_crops,
        return_landmarks=message.return_landmarks,
    )


def face_to_proto(face: domain.Face, return_landmarks: bool) -> face_pb2.Face:
    q = face.quality
    return face_pb2.Face(
        box=face_pb2.BoundingBox(x1=face.box[0], y1=face.box[1], x2=face.box[2], y2=face.box[3]),
        landmarks=[face_pb2.Point(x=float(x), y=float(y)) for x, y in face.landmarks] if return_landmarks else [],
        det_score=face.det_score,
        quality=face_pb2.Quality(
            blur_score=q.blur_score,
            face_size=q.face_size,
            yaw=q.yaw,
            pitch=q.pitch,
            roll=q.roll,
            score=q.score,
            passed=q.passed,
            failures=[_FAILURES[f] for f in q.failures],
        ),
        embedding=face.embedding.tolist(),
        aligned_crop=face.aligned_crop_png,
    )


def faces_to_proto(result: domain.ImageResult, return_landmarks: bool) -> list[face_pb2.Face]:
    return [face_to_proto(face, return_landmarks) for face in result.faces]


def stream_request_from_proto(message: embedder_pb2.EmbedStreamRequest | wire.Malformed) -> domain.StreamRequest:
    """One stream item; one that does not parse or has a bad field carries its error, so only that
    item fails and the stream goes on."""
    if isinstance(message, wire.Malformed):
        return domain.StreamRequest("", None, domain.RequestOptions(), message.error)
    try:
        wire.check_request(message)
        options = options_from_proto(message.options)
        return domain.StreamRequest(message.request_id, image_input_from_proto(message.input), options)
    except InvalidArgument as exc:
        return domain.StreamRequest(message.request_id, None, domain.RequestOptions(), exc)


class EmbedderServicer(embedder_pb2_grpc.EmbedderServiceServicer):
    """Serves once `engine` is set (the port opens while models load, health NOT_SERVING)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine

    @property
    def _engine(self) -> Engine:
        if self.engine is None:
            raise Unavailable("models are still loading")
        return self.engine

    async def Embed(
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        result = await self._engine.embed(image_input_from_proto(request.input), options_from_proto(request.options))
        return embedder_pb2.EmbedResponse(
            faces=faces_to_proto(result, request.options.return_landmarks),
            image_size=face_pb2.ImageSize(width=result.width, height=result.height),
        )

    async def EmbedStream(
        self,
        request_iterator: AsyncIterator[embedder_pb2.EmbedStreamRequest | wire.Malformed],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[embedder_pb2.EmbedStreamResponse]:
        async def requests() -> AsyncIterator[domain.StreamRequest]:
            async for message in request_iterator:
                yield stream_request_from_proto(message)

        async for request, outcome in self._engine.embed_stream(requests()):
            if isinstance(outcome, FaceSearchError):
                code, message = status_of(outcome)
                yield embedder_pb2.EmbedStreamResponse(
                    request_id=request.request_id, status=status_pb2.Status(code=code.value[0], message=message)
                )
            else:
                yield embedder_pb2.EmbedStreamResponse(
                    request_id=request.request_id,
                    status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
                    faces=faces_to_proto(outcome, request.options.return_landmarks),
                    image_size=face_pb2.ImageSize(width=outcome.width, height=outcome.height),
                )

    async def GetModelInfo(
        self, request: embedder_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.GetModelInfoResponse:
        info = self._engine.model_info()
        return embedder_pb2.GetModelInfoResponse(
            pack_name=info.pack_name,
            embedding_size=info.embedding_size,
            detector_input_size=face_pb2.ImageSize(
                width=info.detector_input_size[0], height=info.detector_input_size[1]
            ),
            execution_provider=info.execution_provider,
            detector_file=info.detector_file,
            recognizer_file=info.recognizer_file,
            library_versions=info.library_versions,
            max_batch_size=info.max_batch_size,
        )
