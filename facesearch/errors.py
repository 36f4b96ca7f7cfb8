"""Domain errors shared by both services; facesearch.serving maps them to gRPC status codes in one
place, so handlers raise these and never call `context.set_code`."""

from __future__ import annotations

import sys

import grpc


class FaceSearchError(Exception):
    """Base of every error a caller should see with its own status code and message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FaceSearchError):
    """The request is malformed: bad image, option out of range, wrong embedding size..."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FaceSearchError):
    """A collection, photo, person or face that does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FaceSearchError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FaceSearchError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(FaceSearchError):
    """Not ready yet, shutting down, or a dependency (embedder, database) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(FaceSearchError):
    """A queue is full: the caller should back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(FaceSearchError):
    """No credential, or one that is malformed, unknown, expired or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FaceSearchError):
    """A valid credential asking for something it may not do (e.g. another tenant)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceeded(FaceSearchError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "a dependency cannot be reached right now", whoever raised them.
    asyncpg's are looked up only where asyncpg is loaded (the embedder never imports it)."""
    types: list[type[BaseException]] = [ConnectionError]
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is not None:
        types += [
            asyncpg.PostgresConnectionError,  # connection lost, refused, does not exist
            asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
            asyncpg.InterfaceError,  # "connection is closed" / "connection was closed in the middle of operation"
            asyncpg.InternalClientError,  # protocol state broken by a connection dropped mid-query
        ]
    return tuple(types)


def is_infrastructure_error(exc: BaseException) -> bool:
    """True for errors that a retry (on another replica, or a moment later) can fix."""
    return isinstance(exc, _infrastructure_errors())


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (code, message) a caller sees for `exc`: domain errors keep theirs, an unreachable
    dependency is UNAVAILABLE (so clients that retry UNAVAILABLE retry it), anything else is
    INTERNAL with a generic message."""
    if isinstance(exc, FaceSearchError):
        return exc.code, exc.message
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or exc.code().name
    if is_infrastructure_error(exc):
        return grpc.StatusCode.UNAVAILABLE, f"a dependency is unavailable ({exc.__class__.__name__}); retry"
    return grpc.StatusCode.INTERNAL, "internal error"


def detached(exc: BaseException) -> FaceSearchError:
    """`exc` as a FaceSearchError carrying only its status: no traceback, cause or context, so a
    result that holds it (e.g. a per-photo error waiting to be sent) does not keep the frames that
    raised it alive, with their locals (image bytes) in them."""
    code, message = status_of(exc)
    if isinstance(exc, FaceSearchError):
        exc.__traceback__ = exc.__cause__ = exc.__context__ = None
        return exc
    error = FaceSearchError(message)
    error.code = code
    return error
