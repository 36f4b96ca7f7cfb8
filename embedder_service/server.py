"""Wiring of the embedder process: settings -> models -> engine -> gRPC server (interceptor,
health, reflection, options) -> warm-up -> SERVING; metrics endpoint; drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import cv2

from embedder_service.config import EmbedderSettings
from embedder_service.engine import Engine
from embedder_service.models import load_models
from embedder_service.servicer import EmbedderServicer
from facesearch.observability import start_metrics_server
from facesearch.serving import GrpcServer, ServerOptions
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"].full_name


@dataclass
class EmbedderServer:
    """A started embedder: `port` serves gRPC, `metrics_port` serves /metrics."""

    settings: EmbedderSettings
    grpc: GrpcServer
    engine: Engine
    port: int
    metrics_port: int

    async def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, let in-flight calls finish within the grace, then stop the engine."""
        await self.grpc.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.engine.close()


async def start_server(settings: EmbedderSettings) -> EmbedderServer:
    """Binds the port first (health NOT_SERVING, calls answer UNAVAILABLE) so probes see a live
    process while models load, then loads, warms up and reports SERVING."""
    # OpenCV logs every undecodable image at ERROR; bad input is answered to the caller instead.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    servicer = EmbedderServicer()
    grpc_server = GrpcServer(
        "embedder",
        ServerOptions.from_settings(settings),
    )
    grpc_server.add_service(SERVICE_NAME, embedder_pb2_grpc.add_EmbedderServiceServicer_to_server, servicer)
    port = await grpc_server.start()
    try:
        models = await asyncio.to_thread(load_models, settings)
        engine = Engine(settings, models)
        await engine.start()
        await engine.warm_up()
    except BaseException:
        await grpc_server.stop(0)
        raise
    servicer.engine = engine
    metrics_port = start_metrics_server(settings.metrics_port, settings.metrics_host)
    await grpc_server.set_serving()
    info = engine.model_info()
    log.info(
        "embedder serving",
        extra={
            "port": port,
            "metrics_port": metrics_port,
            "pack": info.pack_name,
            "provider": info.execution_provider,
            "detector": info.detector_file,
            "recognizer": info.recognizer_file,
        },
    )
    return EmbedderServer(settings, grpc_server, engine, port, metrics_port)
