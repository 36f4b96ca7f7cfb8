"""The one place where the gateway turns a failure into an HTTP status and plain words for the
page: gRPC status codes of the search service, and the gateway's own checks of what it was sent."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass
class PageError(Exception):
    """A failure the page shows as `message`; `code` is the gRPC code's name (or the gateway's)."""

    http_status: int
    code: str
    message: str

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


# gRPC code -> (HTTP status, sentence shown before the service's own detail; None: the detail alone).
_BY_CODE: dict[grpc.StatusCode, tuple[int, str | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, None),
    grpc.StatusCode.OUT_OF_RANGE: (400, None),
    grpc.StatusCode.FAILED_PRECONDITION: (400, None),
    grpc.StatusCode.NOT_FOUND: (404, None),
    grpc.StatusCode.ALREADY_EXISTS: (409, None),
    grpc.StatusCode.UNAUTHENTICATED: (401, "The API key is missing or was not accepted."),
    grpc.StatusCode.PERMISSION_DENIED: (403, "This API key may not do that."),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "The service is busy or the request is too large; try again."),
    grpc.StatusCode.UNAVAILABLE: (503, "The search service is unavailable; try again in a moment."),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "The search service took too long to answer; try again."),
    grpc.StatusCode.CANCELLED: (499, "The request was cancelled."),
}


def from_grpc(code: grpc.StatusCode, details: str | None) -> PageError:
    http_status, sentence = _BY_CODE.get(code, (502, "The search service failed; see its log."))
    detail = (details or "").strip()
    if sentence is None:
        message = _capitalised(detail) if detail else code.name.replace("_", " ").lower()
    elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) or not detail:
        message = sentence
    else:
        message = f"{sentence} ({detail})"
    return PageError(http_status, code.name, message)


def from_status(code_value: int, details: str) -> PageError:
    """From a google.rpc.Status code number (a stream item's status)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == code_value), grpc.StatusCode.UNKNOWN)
    return from_grpc(code, details)


def no_face(reason: str) -> str:
    """The sentence shown when the service found no usable face in a picture."""
    return f"No face found in the picture: {reason}." if reason else "No face found in the picture."


def bad_request(message: str) -> PageError:
    return PageError(400, "INVALID_ARGUMENT", message)


def too_large(size: int, limit: int) -> PageError:
    return PageError(
        413, "IMAGE_TOO_LARGE", f"The image is too large ({size / 1e6:.1f} MB; at most {limit / 1e6:.1f} MB)."
    )


def _capitalised(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
