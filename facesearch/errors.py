"""Domain errors shared by both services; facesearch.serving maps them to gRPC status codes in one
place, so handlers raise these and never call `context.set_code`."""

from __future__ import annotations

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


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (code, message) a caller sees for `exc`; unexpected errors get a generic message."""
    if isinstance(exc, FaceSearchError):
        return exc.code, exc.message
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or exc.code().name
    return grpc.StatusCode.INTERNAL, "internal error"
