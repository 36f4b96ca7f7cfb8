"""Settings of the embedder service, read once from EMBEDDER_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facesearch.tls import ServerTlsSettings


class ExecutionProvider(StrEnum):
    """onnxruntime execution providers, in the order `auto` tries them."""

    TENSORRT = "TensorrtExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    CPU = "CPUExecutionProvider"


class BatchingSettings(BaseModel):
    """Cross-request dynamic batching (Triton's max_batch_size + max_queue_delay)."""

    # Largest recognition batch (aligned 112x112 crops) formed across concurrent calls.
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    # Largest detection batch (letterboxed detector inputs).
    max_detection_batch_size: int = Field(default=8, ge=1, le=256)
    # Longest an item waits for others to join its batch, milliseconds. 0 = flush at once.
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    # Items waiting in one batcher before new work is refused with RESOURCE_EXHAUSTED.
    max_queue_size: int = Field(default=1024, ge=1)
    # Threads that run inference, per model (onnxruntime releases the GIL while it runs). 1 by default:
    # on 2 cores, 2 threads x 1 intra-op thread won group photos and lost event photos in
    # tests/bench/bench_embedder.py --compare-threads, and peaked 500 MiB higher, since each
    # concurrent run holds its own activations (README "Sizing threads").
    inference_threads: int = Field(default=1, ge=1, le=64)


class QualitySettings(BaseModel):
    """Default quality-gate thresholds; each can be overridden per request."""

    min_det_score: float = Field(default=0.6, ge=0.0, le=1.0)
    min_face_size: float = Field(default=32.0, ge=0.0)
    min_blur_score: float = Field(default=20.0, ge=0.0)
    max_pose_angle: float = Field(default=45.0, ge=0.0, le=180.0)


class EmbedderSettings(BaseSettings):
    """Everything the embedder service can be told; `EMBEDDER_` prefix, `__` for nested groups."""

    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", env_nested_delimiter="__", extra="ignore")

    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_host: str = "[::]"
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    # Address the /metrics listener binds (127.0.0.1 keeps it off the network).
    metrics_host: str = "0.0.0.0"
    # gRPC server reflection (grpcurl without protos); off in the production overlays.
    reflection: bool = True
    # Plaintext port serving only grpc.health.v1, for kubelet's gRPC probes when the main port
    # serves TLS (they speak no TLS); 0 = none.
    health_port: int = Field(default=0, ge=0, le=65535)
    # EMBEDDER_TLS__CERT_FILE / __KEY_FILE serve TLS; __CLIENT_CA_FILE requires client certificates.
    tls: ServerTlsSettings = ServerTlsSettings()

    # Where model packs live (<models_dir>/<pack>/*.onnx, insightface's layout).
    models_dir: Path = Path("~/.insightface/models").expanduser()
    model_pack: str = "buffalo_l"
    # Download the pack from insightface's published URL when models_dir lacks it.
    allow_download: bool = True
    # Where to download the pack zip from; empty = insightface's published URL for `model_pack`.
    model_url: str = ""
    # SHA-256 the downloaded zip must have; empty = the digest pinned in embedder_service.models.
    model_sha256: str = ""
    download_timeout_s: float = Field(default=300.0, gt=0)
    # "auto" (TensorRT, then CUDA, then CPU, by availability) or a provider name.
    execution_provider: str = "auto"
    device_id: int = Field(default=0, ge=0)
    # TensorRT: FP16 kernels, and where built engines and kernel timings are cached (mount a volume
    # here: the first start on a GPU model builds them, later starts load them).
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: Path = Path("~/.cache/facesearch/tensorrt").expanduser()
    tensorrt_workspace_mb: int = Field(default=4096, ge=64)
    # Decode JPEGs on the GPU with NVIDIA nvImageCodec when it is installed and the models run on
    # CUDA/TensorRT (at GPU inference speed the CPU decoders are the ceiling).
    gpu_jpeg_decode: bool = True
    # Threads onnxruntime may use inside one CPU inference (0 = onnxruntime's default, one per core).
    intra_op_threads: int = Field(default=0, ge=0)
    # Let onnxruntime's intra-op threads spin while waiting for work. Off by default: detection and
    # recognition run at once on their own threads, and spinning threads of one steal the few CPU
    # cores the other is computing on (measured with tests/bench/bench_embedder.py on 2 cores).
    intra_op_spinning: bool = False
    # onnxruntime's CPU memory arena keeps the largest batch's activations for the life of the process
    # (about 1.4 GB for a detection batch of 8 plus a recognition batch of 32 at buffalo_l's cost);
    # off, each inference's memory is returned when it ends, so RSS follows the work in progress.
    cpu_memory_arena: bool = False

    detector_input_size: int = Field(default=640, ge=64, le=4096)
    detection_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    nms_threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    # Upper bound on faces returned per image.
    max_faces_per_image: int = Field(default=100, ge=1, le=1000)
    # Decoded images above this many pixels are refused (read from the header, before decoding).
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Threads that decode and pre-process images.
    decode_threads: int = Field(default=2, ge=1, le=64)
    # Largest libjpeg-turbo DCT scale denominator JPEGs are decoded at (1, 2, 4 or 8; 1 = always full
    # size); the coarsest scale up to it that still covers the detector input is used. 2 by default:
    # on 24 MP photos entropy decoding dominates (1/8 costs ~45% of a full decode, 1/2 ~55%), so a
    # 1/8 decode followed by a 1/2 one for group-shot-sized faces costs more than one 1/2 decode.
    jpeg_max_reduction: int = Field(default=2)
    # A face is aligned from the reduced image only while its crop samples it at no more than this
    # many crop pixels per source pixel; smaller faces get a finer decode (down to full size).
    align_max_upscale: float = Field(default=1.0, gt=0.0, le=8.0)

    batching: BatchingSettings = BatchingSettings()
    quality: QualitySettings = QualitySettings()

    # Decoded pixels (3 bytes each) that the images being processed may hold, across all calls;
    # an image that doesn't fit gets RESOURCE_EXHAUSTED. 200 M = 600 MB of pixels: 33 24 MP JPEGs
    # (decoded at 1/2 scale), or eight 24 MP PNGs. Finer decodes made only to align small faces are
    # short-lived and bounded by decode_threads instead.
    max_decoded_pixels_in_flight: int = Field(default=200_000_000, ge=1)
    # Images of one EmbedStream being processed at once; further requests wait (backpressure).
    max_in_flight_per_stream: int = Field(default=16, ge=1, le=1024)
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Servers close connections after this long so clients re-resolve and new pods get traffic.
    max_connection_age_s: float = Field(default=300.0, gt=0)
    # Calls still open when a connection reaches its age may finish within this long (a long
    # EmbedStream or IndexPhotos keeps going; new calls go to a new connection).
    max_connection_age_grace_s: float = Field(default=600.0, gt=0)
    keepalive_time_s: float = Field(default=30.0, gt=0)
    keepalive_timeout_s: float = Field(default=10.0, gt=0)
    # On SIGTERM: health goes NOT_SERVING, in-flight calls get this long to finish.
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    log_level: str = "INFO"

    @field_validator("jpeg_max_reduction")
    @classmethod
    def _dct_scale(cls, value: int) -> int:
        if value not in (1, 2, 4, 8):
            raise ValueError("jpeg_max_reduction must be 1, 2, 4 or 8 (libjpeg-turbo's DCT scales)")
        return value
