"""The gateway's HTTP routes: each converts the page's JSON/multipart request into one facesearch.v1
call to the search service and its answer back into JSON; photo bytes come from the PhotoStore."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facesearch.tls import ReloadingChannel, aio_channel
from facesearch.v1 import face_pb2, search_pb2, search_pb2_grpc
from facesearch.web import errors
from facesearch.web.config import WebSettings
from facesearch.web.photos import PhotoStore

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# Files of one upload request (the page sends batches of a few).
MAX_FILES_PER_REQUEST = 64
MAX_ENROL_IMAGES = 10
# Collections listed on the Events page (pages of 1000 are followed up to this many).
MAX_LISTED_COLLECTIONS = 10_000


class Gateway:
    """The gRPC channel, the photo store and the settings, shared by every route."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.store = PhotoStore(settings.data_dir, settings.thumbnail_size)
        self.channel: grpc.aio.Channel | ReloadingChannel | None = None

    @property
    def stub(self) -> search_pb2_grpc.FaceSearchServiceStub:
        assert self.channel is not None, "the gateway is not started"
        return search_pb2_grpc.FaceSearchServiceStub(self.channel)

    def credentials(self, request: Request) -> tuple[tuple[tuple[str, str], ...], str]:
        """(gRPC metadata, caller key of the photo store): the page's key wins over the configured one."""
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        key = key or self.settings.api_key
        metadata: list[tuple[str, str]] = []
        if key:
            metadata.append(("authorization", f"Bearer {key}"))
        if self.settings.tenant:
            metadata.append(("x-tenant-id", self.settings.tenant))
        caller = f"key:{key}" if key else f"tenant:{self.settings.tenant}"
        return tuple(metadata), caller

    async def call(self, method: Callable[..., Awaitable[Any]], message: Any, request: Request) -> Any:
        metadata, _ = self.credentials(request)
        try:
            return await method(message, metadata=metadata, timeout=self.settings.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_grpc(exc.code(), exc.details()) from exc


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


# --- helpers converting between JSON and protos ---------------------------------------------------


def box_json(box: face_pb2.BoundingBox) -> list[float]:
    return [round(box.x1, 1), round(box.y1, 1), round(box.x2, 1), round(box.y2, 1)]


def collection_json(collection: search_pb2.Collection) -> dict[str, Any]:
    return {
        "name": collection.name,
        "display_name": collection.display_name,
        "photo_count": collection.photo_count,
        "face_count": collection.face_count,
        "person_count": collection.person_count,
        "create_time": collection.create_time.ToJsonString() if collection.HasField("create_time") else None,
    }


def query_face_json(face: search_pb2.QueryFace) -> dict[str, Any]:
    return {"box": box_json(face.box), "quality": round(face.quality.score, 3), "image_index": face.image_index}


def failure_names(quality: face_pb2.Quality) -> list[str]:
    return [
        face_pb2.QualityFailure.Name(f).removeprefix("QUALITY_FAILURE_").replace("_", " ").lower()
        for f in quality.failures
    ]


def person_json(person: search_pb2.Person) -> dict[str, Any]:
    return {
        "external_id": person.external_id,
        "template_quality": round(person.template_quality, 3),
        "metadata": json_format.MessageToDict(person.metadata),
    }


async def read_image(gateway: Gateway, upload: Any, what: str) -> bytes:
    if not isinstance(upload, UploadFile):
        raise errors.bad_request(f"Choose {what} first.")
    data = await upload.read(gateway.settings.max_image_bytes + 1)
    if len(data) > gateway.settings.max_image_bytes:
        raise errors.too_large(upload.size or len(data), gateway.settings.max_image_bytes)
    if not data:
        raise errors.bad_request(f"{upload.filename or 'The file'} is empty.")
    return data


def optional_float(form: Any, name: str, low: float, high: float) -> float | None:
    raw = form.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise errors.bad_request(f"{name.replace('_', ' ')} must be a number.") from None
    if not low <= value <= high:
        raise errors.bad_request(f"{name.replace('_', ' ')} must be between {low} and {high}.")
    return value


def form_int(form: Any, name: str, default: int, low: int, high: int) -> int:
    value = optional_float(form, name, low, high)
    return default if value is None else int(value)


# --- routes ----------------------------------------------------------------------------------------


async def config(request: Request) -> JSONResponse:
    settings = gateway_of(request).settings
    return JSONResponse({"key_configured": bool(settings.api_key), "max_image_bytes": settings.max_image_bytes})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the search service says SERVING."""
    gateway = gateway_of(request)
    try:
        reply = await health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
    except grpc.aio.AioRpcError as exc:
        return JSONResponse({"status": exc.code().name}, status_code=503)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return JSONResponse({"status": "SERVING" if serving else "NOT_SERVING"}, status_code=200 if serving else 503)


async def list_collections(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    collections: list[dict[str, Any]] = []
    token = ""
    while len(collections) < MAX_LISTED_COLLECTIONS:
        reply = await gateway.call(
            gateway.stub.ListCollections, search_pb2.ListCollectionsRequest(page_size=1000, page_token=token), request
        )
        collections += [collection_json(c) for c in reply.collections]
        token = reply.next_page_token
        if not token:
            break
    return JSONResponse({"collections": collections})


async def create_collection(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    try:
        body = await request.json()
    except ValueError:
        raise errors.bad_request("The request is not JSON.") from None
    name = str(body.get("name", "")).strip() if isinstance(body, dict) else ""
    display_name = str(body.get("display_name", "")).strip() if isinstance(body, dict) else ""
    reply = await gateway.call(
        gateway.stub.CreateCollection, search_pb2.CreateCollectionRequest(name=name, display_name=display_name), request
    )
    return JSONResponse(collection_json(reply.collection), status_code=201)


async def get_collection(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    name = request.path_params["name"]
    reply = await gateway.call(gateway.stub.GetCollection, search_pb2.GetCollectionRequest(name=name), request)
    return JSONResponse(collection_json(reply.collection))


async def delete_collection(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    name = request.path_params["name"]
    reply = await gateway.call(gateway.stub.DeleteCollection, search_pb2.DeleteCollectionRequest(name=name), request)
    _, caller = gateway.credentials(request)
    await asyncio.to_thread(gateway.store.delete_collection, caller, name)
    return JSONResponse(
        {
            "photos_deleted": reply.photos_deleted,
            "faces_deleted": reply.faces_deleted,
            "persons_deleted": reply.persons_deleted,
        }
    )


async def upload_photos(request: Request) -> JSONResponse:
    """Indexes a batch of photos (multipart `photos`, with `ids` in the same order: the external ids,
    e.g. paths inside a dropped folder) in one IndexPhotos stream; keeps each stored photo's bytes.

    Photos are read from the parsed form's spooled files one at a time as the stream asks for them,
    so memory holds the stream's in-flight photos, not the whole batch."""
    gateway = gateway_of(request)
    collection = request.path_params["name"]
    metadata, caller = gateway.credentials(request)
    limit = gateway.settings.max_image_bytes
    async with request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=MAX_FILES_PER_REQUEST + 8) as form:
        files = form.getlist("photos")
        ids = [str(i) for i in form.getlist("ids")]
        if not files:
            raise errors.bad_request("Choose some photos first.")
        if ids and len(ids) != len(files):
            raise errors.bad_request("Each photo needs its id.")
        results: dict[str, dict[str, Any]] = {}
        pending: dict[str, UploadFile] = {}
        order: list[str] = []
        for index, upload in enumerate(files):
            if not isinstance(upload, UploadFile):
                raise errors.bad_request("photos must be files.")
            external_id = ids[index] if ids else (upload.filename or f"photo-{index}")
            if external_id in pending or external_id in results:
                duplicate = errors.bad_request(f"{external_id} appears twice in this upload; it was sent once.")
                order.append(f"{external_id} (again)")
                results[order[-1]] = error_result(external_id, duplicate)
                continue
            order.append(external_id)
            if upload.size is not None and upload.size > limit:
                results[external_id] = error_result(external_id, errors.too_large(upload.size, limit))
            else:
                pending[external_id] = upload

        async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
            for external_id, upload in pending.items():
                data = await read_upload(upload)
                yield search_pb2.IndexPhotosRequest(collection=collection, external_id=external_id, image=data)

        if pending:
            try:
                stream = gateway.stub.IndexPhotos(requests(), metadata=metadata, timeout=gateway.settings.timeout_s)
                async for response in stream:
                    results[response.external_id] = await index_result(gateway, caller, collection, response, pending)
            except grpc.aio.AioRpcError as exc:
                failure = errors.from_grpc(exc.code(), exc.details())
                if not results:
                    raise failure from exc
                # The stream broke part-way: what has no answer is reported with the stream's error.
                for external_id in pending:
                    results.setdefault(external_id, error_result(external_id, failure))
    return JSONResponse({"results": [results[i] for i in order if i in results]})


async def read_upload(upload: UploadFile) -> bytes:
    await upload.seek(0)
    return await upload.read()


def error_result(external_id: str, error: errors.PageError) -> dict[str, Any]:
    return {"external_id": external_id, "ok": False, "error": error.body()["error"]}


async def index_result(
    gateway: Gateway,
    caller: str,
    collection: str,
    response: search_pb2.IndexPhotosResponse,
    uploads: dict[str, UploadFile],
) -> dict[str, Any]:
    if response.status.code != 0:
        return error_result(response.external_id, errors.from_status(response.status.code, response.status.message))
    upload = uploads.get(response.external_id)
    if upload is not None:
        data = await read_upload(upload)
        await asyncio.to_thread(gateway.store.put, caller, collection, response.external_id, data)
    return {
        "external_id": response.external_id,
        "ok": True,
        "outcome": search_pb2.IndexOutcome.Name(response.outcome).removeprefix("INDEX_OUTCOME_").lower(),
        "faces_indexed": response.faces_indexed,
        "rejected": [{"box": box_json(r.box), "failures": failure_names(r.quality)} for r in response.rejected_faces],
        "no_face_reason": response.no_face_reason,
    }


async def photo_json(gateway: Gateway, caller: str, collection: str, photo_id: str) -> dict[str, Any] | None:
    info = await asyncio.to_thread(gateway.store.info, caller, collection, photo_id)
    return None if info is None else {"width": info.width, "height": info.height}


async def search(request: Request) -> JSONResponse:
    """Search by a selfie (multipart `image`), a page at a time."""
    gateway = gateway_of(request)
    collection = request.path_params["name"]
    _, caller = gateway.credentials(request)
    async with request.form(max_files=1) as form:
        image = await read_image(gateway, form.get("image"), "a selfie")
        message = search_pb2.SearchRequest(
            collection=collection,
            image=search_pb2.ImageQuery(image=image),
            top_k=form_int(form, "top_k", 12, 1, 1000),
            page_token=str(form.get("page_token") or ""),
        )
        min_similarity = optional_float(form, "min_similarity", -1.0, 1.0)
    if min_similarity is not None:
        message.min_similarity = min_similarity
    reply = await gateway.call(gateway.stub.Search, message, request)
    if reply.no_face_reason:
        raise errors.PageError(422, "NO_FACE", errors.no_face(reply.no_face_reason))
    matches = [
        {
            "photo_id": m.photo_id,
            "face_id": m.face_id,
            "box": box_json(m.box),
            "similarity": round(m.similarity, 4),
            "photo": await photo_json(gateway, caller, collection, m.photo_id),
        }
        for m in reply.matches
    ]
    return JSONResponse(
        {
            "matches": matches,
            "next_page_token": reply.next_page_token,
            "query_faces": [query_face_json(f) for f in reply.query_faces],
        }
    )


async def photo_bytes(request: Request) -> Response:
    """A photo kept by the gateway: `?id=EXTERNAL_ID&size=thumb|full`."""
    gateway = gateway_of(request)
    _, caller = gateway.credentials(request)
    found = await asyncio.to_thread(
        gateway.store.read,
        caller,
        request.path_params["name"],
        request.query_params.get("id", ""),
        request.query_params.get("size") != "full",
    )
    if found is None:
        raise errors.PageError(404, "NOT_FOUND", "This photo was not uploaded through this page.")
    data, media_type = found
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


async def photo_faces(request: Request) -> JSONResponse:
    """Every stored face of a kept photo (GetPhoto: the faces indexing kept, no embedder call)."""
    gateway = gateway_of(request)
    collection = request.path_params["name"]
    photo_id = request.query_params.get("id", "")
    _, caller = gateway.credentials(request)
    if await asyncio.to_thread(gateway.store.info, caller, collection, photo_id) is None:
        raise errors.PageError(404, "NOT_FOUND", "This photo was not uploaded through this page.")
    message = search_pb2.GetPhotoRequest(collection=collection, external_id=photo_id)
    reply = await gateway.call(gateway.stub.GetPhoto, message, request)
    return JSONResponse(
        {
            "photo_id": photo_id,
            "photo": await photo_json(gateway, caller, collection, photo_id),
            "faces": [
                {"face_id": f.face_id, "box": box_json(f.box), "quality": round(f.quality.score, 3)}
                for f in reply.photo.faces
            ],
        }
    )


async def enroll_person(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    async with request.form(max_files=MAX_ENROL_IMAGES) as form:
        external_id = str(form.get("external_id") or "").strip()
        uploads = form.getlist("images")
        if not external_id:
            raise errors.bad_request("Give the person an id.")
        if not uploads:
            raise errors.bad_request("Choose or take at least one photo of the person.")
        images = [await read_image(gateway, u, "a photo") for u in uploads]
    reply = await gateway.call(
        gateway.stub.EnrollPerson,
        search_pb2.EnrollPersonRequest(collection=request.path_params["name"], external_id=external_id, images=images),
        request,
    )
    # The template is the face of this request whose quality the person now carries.
    template_index = None
    if reply.template_replaced:
        scores = [
            abs(r.face.quality.score - reply.person.template_quality) if r.status.code == 0 else float("inf")
            for r in reply.images
        ]
        template_index = min(range(len(scores)), key=scores.__getitem__)
    results = []
    for index, result in enumerate(reply.images):
        item: dict[str, Any] = {"ok": result.status.code == 0, "template": index == template_index}
        if result.status.code == 0:
            item |= query_face_json(result.face)
        else:
            item["error"] = errors.from_status(result.status.code, result.status.message).body()["error"]
        results.append(item)
    return JSONResponse(
        {
            "person": person_json(reply.person),
            "created": reply.created,
            "template_replaced": reply.template_replaced,
            "images": results,
        }
    )


async def identify_person(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    async with request.form(max_files=1) as form:
        image = await read_image(gateway, form.get("image"), "a photo")
        top_k = form_int(form, "top_k", 5, 1, 100)
    reply = await gateway.call(
        gateway.stub.IdentifyPerson,
        search_pb2.IdentifyPersonRequest(
            collection=request.path_params["name"], face=search_pb2.FaceQuery(image=image), top_k=top_k
        ),
        request,
    )
    if reply.no_face_reason:
        raise errors.PageError(422, "NO_FACE", errors.no_face(reply.no_face_reason))
    return JSONResponse(
        {
            "candidates": [
                {"person": person_json(c.person), "similarity": round(c.similarity, 4)} for c in reply.candidates
            ],
            "threshold": round(reply.threshold, 4),
            "query_face": query_face_json(reply.query_face),
        }
    )


async def verify_person(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    async with request.form(max_files=1) as form:
        image = await read_image(gateway, form.get("image"), "a photo")
        person_id = str(form.get("person_id") or "").strip()
    if not person_id:
        raise errors.bad_request("Say which person to verify against.")
    reply = await gateway.call(
        gateway.stub.VerifyPerson,
        search_pb2.VerifyPersonRequest(
            collection=request.path_params["name"], person_id=person_id, face=search_pb2.FaceQuery(image=image)
        ),
        request,
    )
    if reply.no_face_reason:
        raise errors.PageError(422, "NO_FACE", errors.no_face(reply.no_face_reason))
    return JSONResponse(
        {
            "match": reply.match,
            "similarity": round(reply.similarity, 4),
            "threshold": round(reply.threshold, 4),
            "query_face": query_face_json(reply.query_face),
        }
    )


async def page_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.PageError)
    if exc.http_status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse(exc.body(), status_code=exc.http_status)


async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    body = errors.PageError(500, "INTERNAL", "Something went wrong in the web gateway; see its log.").body()
    return JSONResponse(body, status_code=500)


class SameOriginWrites(BaseHTTPMiddleware):
    """Refuses writes sent by another site's page (a browser always sends Origin on those): the
    gateway may hold a configured API key, so a foreign page must not spend it."""

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        origin = request.headers.get("origin")
        if request.method not in {"GET", "HEAD", "OPTIONS"} and origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host"):
                error = errors.PageError(403, "PERMISSION_DENIED", "Requests from other sites are refused.")
                return JSONResponse(error.body(), status_code=403)
        return await call_next(request)


def create_app(settings: WebSettings) -> Starlette:
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limit = settings.max_image_bytes * 2 + 1024 * 1024
        gateway.channel = aio_channel(
            settings.search_target,
            settings.tls,
            options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
        )
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.channel.close()

    collection = "/api/collections/{name}"
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/config", config),
        Route("/api/collections", list_collections, methods=["GET"]),
        Route("/api/collections", create_collection, methods=["POST"]),
        Route(collection, get_collection, methods=["GET"]),
        Route(collection, delete_collection, methods=["DELETE"]),
        Route(f"{collection}/photos", upload_photos, methods=["POST"]),
        Route(f"{collection}/photo", photo_bytes, methods=["GET"]),
        Route(f"{collection}/faces", photo_faces, methods=["GET"]),
        Route(f"{collection}/search", search, methods=["POST"]),
        Route(f"{collection}/persons", enroll_person, methods=["POST"]),
        Route(f"{collection}/identify", identify_person, methods=["POST"]),
        Route(f"{collection}/verify", verify_person, methods=["POST"]),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True)),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SameOriginWrites)],
        exception_handlers={errors.PageError: page_error, Exception: unexpected_error},
    )
