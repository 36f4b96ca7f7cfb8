"""Prometheus metrics of the embedder beyond the shared per-RPC ones: batch sizes, queue depth and
time waited in the batch queue, inference time per model, images in flight, images and faces
processed (faces/s = rate), provider in use. Every name has the project's `facesearch_` prefix."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from embedder_service.batcher import BatchObserver

BATCH_SIZE = Histogram(
    "facesearch_embedder_batch_size",
    "Items per inference batch, by model (detection, recognition).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
INFERENCE_SECONDS = Histogram(
    "facesearch_embedder_inference_seconds",
    "Wall time of one inference batch, by model.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("facesearch_embedder_queue_depth", "Items waiting for a batch, by model.", ["model"])
QUEUE_WAIT_SECONDS = Histogram(
    "facesearch_embedder_queue_wait_seconds",
    "Time an item waited in a batch queue before its batch started, by model.",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IMAGES_IN_FLIGHT = Gauge(
    "facesearch_embedder_images_in_flight",
    "Images being processed now, across every call (decode to embedding).",
)
IMAGES = Counter("facesearch_embedder_images_total", "Images processed, by outcome (ok, invalid, error).", ["outcome"])
FACES = Counter("facesearch_embedder_faces_total", "Faces embedded; rate() gives faces per second.")
PROVIDER = Gauge(
    "facesearch_embedder_execution_provider_info",
    "1 for the onnxruntime execution provider each model runs on.",
    ["model", "provider"],
)


class PrometheusBatchObserver(BatchObserver):
    def batch_ran(self, name: str, size: int, seconds: float) -> None:
        BATCH_SIZE.labels(name).observe(size)
        INFERENCE_SECONDS.labels(name).observe(seconds)

    def queue_depth(self, name: str, depth: int) -> None:
        QUEUE_DEPTH.labels(name).set(depth)

    def waited(self, name: str, seconds: float) -> None:
        QUEUE_WAIT_SECONDS.labels(name).observe(seconds)
