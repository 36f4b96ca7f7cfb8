"""An EmbedderService that answers from precomputed faces, for measuring the search service's
storage path through IndexPhotos without model cost: the image bytes are a photo's index, the
reply is that photo's faces from an .npz (embeddings + photo_of). Health, reflection and the
shared interceptor come from facesearch.serving, as in the real embedder. Tests use it too, for
what the real embedder cannot be made to do (answer several calls at the same moment).

    python -m tests.bench.replay_embedder FACES.npz PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np

from facesearch.errors import InvalidArgument
from facesearch.serving import GrpcServer, ServerOptions, run_until_signalled
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2


class ReplayEmbedder(embedder_pb2_grpc.EmbedderServiceServicer):
    """`hold`: answer nothing until that many calls are waiting, then all of them at once (so a
    test knows those photos are ready together)."""

    def __init__(self, faces: np.ndarray, photo_of: np.ndarray, hold: int = 0) -> None:
        self._hold = hold
        self._waiting = 0
        self._release = asyncio.Event()
        starts = np.searchsorted(photo_of, np.arange(int(photo_of.max()) + 2))
        quality = face_pb2.Quality(score=0.9, passed=True, face_size=100.0, blur_score=100.0)
        box = face_pb2.BoundingBox(x1=0, y1=0, x2=100, y2=100)
        # Replies are built once: what is measured is the search service, not this server.
        self._replies = [
            embedder_pb2.EmbedResponse(
                faces=[
                    face_pb2.Face(box=box, det_score=0.9, quality=quality, embedding=faces[i].tolist())
                    for i in range(starts[p], starts[p + 1])
                ]
            ).SerializeToString()
            for p in range(len(starts) - 1)
        ]

    async def Embed(self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> bytes:
        index = int.from_bytes(request.input.encoded_image[:8], "little")
        if self._hold:
            self._waiting += 1
            if self._waiting >= self._hold:
                self._release.set()
            await self._release.wait()
        if index >= len(self._replies):
            raise InvalidArgument(f"no photo {index}")
        return self._replies[index]

    async def GetModelInfo(
        self, request: embedder_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.GetModelInfoResponse:
        return embedder_pb2.GetModelInfoResponse(pack_name="replay", embedding_size=512)


def _add(servicer: ReplayEmbedder, server: grpc.aio.Server) -> None:
    # Embed's reply is pre-serialised bytes: register it with an identity serializer.
    handlers = {
        "Embed": grpc.unary_unary_rpc_method_handler(
            servicer.Embed,
            request_deserializer=embedder_pb2.EmbedRequest.FromString,
            response_serializer=lambda b: b,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=embedder_pb2.GetModelInfoRequest.FromString,
            response_serializer=embedder_pb2.GetModelInfoResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("facesearch.v1.EmbedderService", handlers),))


async def start(servicer: ReplayEmbedder, port: int = 0) -> GrpcServer:
    """Serving (health SERVING) on 127.0.0.1:`port` (0: a free one, in `.port`)."""
    options = ServerOptions("127.0.0.1", port, 64 * 1024 * 1024, 3600.0, 3600.0, 30.0, 10.0)
    server = GrpcServer("embedder", options)
    server.add_service("facesearch.v1.EmbedderService", _add, servicer)
    await server.start()
    await server.set_serving()
    return server


async def serve(path: str, port: int) -> None:
    data = np.load(path)
    server = await start(ReplayEmbedder(data["faces"], data["photo_of"]), port)
    await run_until_signalled([server], 0.5)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
