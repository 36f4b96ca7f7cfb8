"""The embedder's core: decode -> detect -> align -> recognise for one image or a stream of them,
with detection inputs and face crops of every concurrent call sharing the batchers' batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, TypeVar

import numpy as np
from insightface.utils.face_align import arcface_dst

from embedder_service import decoding, metrics, pipeline
from embedder_service.admission import PixelBudget
from embedder_service.batcher import DynamicBatcher
from embedder_service.config import EmbedderSettings, ExecutionProvider
from embedder_service.domain import (
    EmbedOptions,
    Face,
    ImageInput,
    ImageResult,
    InputKind,
    ModelInfo,
    Quality,
    RequestOptions,
    StreamRequest,
)
from embedder_service.models import LoadedModels
from facesearch.errors import FaceSearchError, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _PreparedPhoto:
    header: decoding.ImageHeader
    scaled: decoding.ScaledImage  # decoded at the detection's DCT scale
    letterboxed: pipeline.Letterboxed


@dataclass
class _PreparedFace:
    det: np.ndarray  # x1, y1, x2, y2, score
    landmarks: np.ndarray
    crop: np.ndarray
    quality: Quality
    crop_png: bytes


class Engine:
    """Owns the models, the two batchers and the decode threads. Create, `await start()`, use,
    `await close()`."""

    def __init__(self, settings: EmbedderSettings, models: LoadedModels) -> None:
        self.settings = settings
        self.models = models
        batching = settings.batching
        observer = metrics.PrometheusBatchObserver()
        self._decode_pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
        self.detection = DynamicBatcher[np.ndarray, list[np.ndarray]](
            "detection",
            models.detector.run,
            max_batch_size=min(batching.max_detection_batch_size, models.detector.max_batch),
            max_queue_delay_s=batching.max_queue_delay_ms / 1000.0,
            max_queue_size=batching.max_queue_size,
            workers=batching.inference_threads,
            observer=observer,
        )
        self.recognition = DynamicBatcher[np.ndarray, np.ndarray](
            "recognition",
            self._recognise_batch,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_s=batching.max_queue_delay_ms / 1000.0,
            max_queue_size=batching.max_queue_size,
            workers=batching.inference_threads,
            observer=observer,
        )
        self._in_flight = 0
        self.pixel_budget = PixelBudget(settings.max_decoded_pixels_in_flight)
        # Enough decoded images to fill every detection worker's next batch; decoding is faster than
        # detection, so more would only hold pixels in the detection queue.
        self._decode_ahead = asyncio.Semaphore(
            max(self.detection.max_batch_size * batching.inference_threads, settings.decode_threads)
        )
        self._gpu_decoder = (
            decoding.GpuJpegDecoder.create(settings.device_id)
            if settings.gpu_jpeg_decode and models.provider in (ExecutionProvider.CUDA, ExecutionProvider.TENSORRT)
            else None
        )
        self._template = arcface_dst * (models.recognizer.input_size[0] / 112.0)
        for model, provider in (
            ("detection", models.detector.provider),
            ("recognition", models.recognizer.provider),
        ):
            metrics.PROVIDER.labels(model, provider).set(1)

    @property
    def in_flight(self) -> int:
        """Images being processed now, across every call."""
        return self._in_flight

    async def start(self) -> None:
        self.detection.start()
        self.recognition.start()

    async def warm_up(self) -> None:
        """One pass through both models (allocations, kernel choice) before health says SERVING."""
        w, h = self.models.detector.input_size
        await self.detection.submit(np.zeros((h, w, 3), np.uint8))
        size = self.models.recognizer.input_size
        await self.recognition.submit(np.zeros((size[1], size[0], 3), np.uint8))

    async def close(self) -> None:
        await self.detection.close()
        await self.recognition.close()
        self._decode_pool.shutdown(wait=True)

    def model_info(self) -> ModelInfo:
        m = self.models
        return ModelInfo(
            pack_name=m.pack_name,
            embedding_size=m.recognizer.embedding_size,
            detector_input_size=m.detector.input_size,
            execution_provider=m.provider,
            detector_file=m.files.detector.name,
            recognizer_file=m.files.recognizer.name,
            library_versions={
                name: version(dist)
                for name, dist in (
                    ("onnxruntime", "onnxruntime-gpu"),
                    ("insightface", "insightface"),
                    ("opencv", "opencv-python-headless"),
                    ("numpy", "numpy"),
                )
            },
            max_batch_size=self.settings.batching.max_batch_size,
        )

    # One image -------------------------------------------------------------------------------

    async def embed(self, image_input: ImageInput, requested: RequestOptions) -> ImageResult:
        """Faces of one image; InvalidArgument for bad input, ResourceExhausted when overloaded."""
        self._in_flight += 1
        metrics.IMAGES_IN_FLIGHT.inc()
        try:
            options = EmbedOptions.resolve(requested, self.settings)
            # The header alone (cheap, off the loop) says how many pixels the image decodes to.
            header = await asyncio.get_running_loop().run_in_executor(
                None, decoding.read_header, image_input.data, self.settings.max_image_pixels
            )
            if image_input.kind is InputKind.ALIGNED_FACE or self._uses_gpu_decoder(header):
                reduction = 1
            else:
                reduction = decoding.detection_reduction(
                    header, self.models.detector.input_size, self.settings.jpeg_max_reduction
                )
            pixels = decoding.decoded_pixels(header, reduction)
            if not self.pixel_budget.try_acquire(pixels):
                metrics.IMAGES.labels("overloaded").inc()
                raise ResourceExhausted(
                    f"{self.pixel_budget.in_use} decoded pixels are in flight and this image needs {pixels} "
                    f"more (EMBEDDER_MAX_DECODED_PIXELS_IN_FLIGHT={self.pixel_budget.limit}); retry later"
                )
            try:
                if image_input.kind is InputKind.ALIGNED_FACE:
                    result = await self._embed_aligned(image_input.data, options)
                else:
                    result = await self._embed_photo(image_input.data, header, reduction, options)
            finally:
                self.pixel_budget.release(pixels)
        except ResourceExhausted:
            raise
        except InvalidArgument:
            metrics.IMAGES.labels("invalid").inc()
            raise
        except Exception:
            metrics.IMAGES.labels("error").inc()
            raise
        finally:
            self._in_flight -= 1
            metrics.IMAGES_IN_FLIGHT.dec()
        metrics.IMAGES.labels("ok").inc()
        metrics.FACES.inc(len(result.faces))
        return result

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs CPU-bound image work on the decode threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, fn, *args)

    async def _embed_photo(
        self, data: bytes, header: decoding.ImageHeader, reduction: int, options: EmbedOptions
    ) -> ImageResult:
        # Decoded pixels live only from decoding to alignment, and only `_decode_ahead` images at a
        # time: the rest of the admitted images wait as bytes, and the crops are all that waits
        # for recognition.
        async with self._decode_ahead:
            prepared: _PreparedPhoto = await self._in_pool(self._prepare_photo, data, header, reduction)
            outputs = await self.detection.submit(prepared.letterboxed.image)
            faces: list[_PreparedFace] = await self._in_pool(self._prepare_faces, data, prepared, outputs, options)
            del prepared, outputs
        embeddings = await self._recognise([f.crop for f in faces])
        return ImageResult(
            width=header.width,
            height=header.height,
            faces=[
                Face(
                    box=(float(f.det[0]), float(f.det[1]), float(f.det[2]), float(f.det[3])),
                    landmarks=f.landmarks,
                    det_score=float(f.det[4]),
                    quality=f.quality,
                    embedding=embedding,
                    aligned_crop_png=f.crop_png,
                )
                for f, embedding in zip(faces, embeddings, strict=True)
            ],
        )

    async def _embed_aligned(self, data: bytes, options: EmbedOptions) -> ImageResult:
        crop: np.ndarray = await self._in_pool(pipeline.decode_image, data, self.settings.max_image_pixels)
        w, h = self.models.recognizer.input_size
        if crop.shape[:2] != (h, w):
            raise InvalidArgument(f"aligned face must be {w}x{h} pixels, got {crop.shape[1]}x{crop.shape[0]}")
        landmarks = self._template.astype(np.float32)
        box = np.array([0.0, 0.0, float(w), float(h)], np.float32)
        quality = await self._in_pool(pipeline.assess, 1.0, box, landmarks, crop, options)
        (embedding,) = await self._recognise([crop])
        return ImageResult(
            width=w,
            height=h,
            faces=[
                Face(
                    box=(0.0, 0.0, float(w), float(h)),
                    landmarks=landmarks,
                    det_score=1.0,
                    quality=quality,
                    embedding=embedding,
                    aligned_crop_png=data if options.return_aligned_crops else b"",
                )
            ],
        )

    def _uses_gpu_decoder(self, header: decoding.ImageHeader) -> bool:
        return self._gpu_decoder is not None and header.format in decoding.JPEG_FORMATS

    def _prepare_photo(self, data: bytes, header: decoding.ImageHeader, reduction: int) -> _PreparedPhoto:
        if self._gpu_decoder is not None and self._uses_gpu_decoder(header):
            image = self._gpu_decoder.decode(data, header)
        else:
            image = decoding.decode(data, header, reduction, self.settings.max_image_pixels)
        if reduction == 1:  # formats without DCT scaling: the size is known only now (EXIF, etc.)
            header = decoding.ImageHeader(header.format, image.shape[1], image.shape[0])
        scaled = decoding.ScaledImage(image, reduction)
        size = (header.width, header.height)
        return _PreparedPhoto(header, scaled, decoding.letterbox(scaled, size, self.models.detector.input_size))

    def _prepare_faces(
        self, data: bytes, prepared: _PreparedPhoto, outputs: list[np.ndarray], options: EmbedOptions
    ) -> list[_PreparedFace]:
        detector = self.models.detector
        dets, kpss = pipeline.decode_detections(
            outputs,
            detector.layout,
            detector.input_size,
            prepared.letterboxed.scale,
            options.detection_threshold,
            self.settings.nms_threshold,
        )
        size = self.models.recognizer.input_size[0]
        header, coarse = prepared.header, prepared.scaled
        chosen = pipeline.order_faces(dets, (header.height, header.width), options.max_faces)
        # Each face is aligned from pixels fine enough for its crop: the detection's reduced image
        # when the face is big enough there, otherwise one finer decode shared by the small faces.
        needs = {
            int(i): decoding.alignment_reduction(
                decoding.crop_scale(kpss[i], size), coarse.reduction, self.settings.align_max_upscale
            )
            for i in chosen
        }
        finest = min(needs.values(), default=coarse.reduction)
        fine = coarse
        if finest < coarse.reduction:
            image = decoding.decode(data, header, finest, self.settings.max_image_pixels)
            fine = decoding.ScaledImage(image, finest)
        faces = []
        for i in chosen:
            source = coarse if needs[int(i)] == coarse.reduction else fine
            crop = pipeline.align(source.image, source.to_scaled(kpss[i]), size)
            quality = pipeline.assess(float(dets[i, 4]), dets[i], kpss[i], crop, options)
            png = pipeline.encode_png(crop) if options.return_aligned_crops else b""
            faces.append(_PreparedFace(dets[i], kpss[i], crop, quality, png))
        return faces

    def _recognise_batch(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(pipeline.l2_normalise(self.models.recognizer.run(crops)))

    async def _recognise(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        if not crops:
            return []
        return await self.recognition.submit_many(crops)

    # A stream of images ----------------------------------------------------------------------

    async def embed_stream(
        self, requests: AsyncIterator[StreamRequest]
    ) -> AsyncIterator[tuple[StreamRequest, ImageResult | FaceSearchError]]:
        """(request, outcome) as each image finishes (not in request order): the request itself
        comes back, so a refused duplicate of an in-flight request_id is never confused with the
        original (whose options it would take). At most
        `max_in_flight_per_stream` images are in progress or waiting to be sent: the stream stops
        reading requests until the client takes results, so a fast client cannot grow memory."""
        slots = asyncio.Semaphore(self.settings.max_in_flight_per_stream)
        # (request, outcome, whether this entry owns request_id in active_ids); None = end of input.
        done: asyncio.Queue[tuple[StreamRequest, ImageResult | FaceSearchError, bool] | None] = asyncio.Queue()
        active_ids: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def one(request: StreamRequest) -> None:
            try:
                if request.error is not None:
                    outcome: ImageResult | FaceSearchError = request.error
                else:
                    assert request.input is not None
                    outcome = await self.embed(request.input, request.options)
            except FaceSearchError as exc:
                outcome = exc
            except Exception:
                log.exception("image %r of a stream failed", request.request_id)
                outcome = FaceSearchError("internal error")
            done.put_nowait((request, outcome, True))

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    if request.request_id in active_ids:
                        error = InvalidArgument(
                            f"request_id {request.request_id!r} is already in progress in this stream"
                        )
                        done.put_nowait((request, error, False))
                        continue
                    active_ids.add(request.request_id)
                    task = asyncio.create_task(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                done.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            reading = True
            while reading or tasks or not done.empty():
                item = await done.get()
                if item is None:
                    reading = False
                    await reader  # re-raises if reading the requests failed (client went away)
                    continue
                request, outcome, owns_id = item
                if owns_id:
                    active_ids.discard(request.request_id)
                yield request, outcome
                slots.release()
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, *tasks, return_exceptions=True)
