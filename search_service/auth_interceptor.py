"""The interceptor that authenticates every call (health and reflection excepted) before its
handler runs, and writes the audit log: one structured line per authentication failure and per
Delete* call (tenant, credential id, method, object ids, outcome)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from facesearch.errors import FaceSearchError, status_of
from search_service.api_keys import key_id_of
from search_service.auth import (
    AUTHORIZATION_METADATA_KEY,
    Authenticator,
    Metadata,
    Principal,
    claimed_tenant,
    set_principal,
    values_of,
)

# One logger name for audit lines, so a log pipeline can route them to their own retention.
audit_log = logging.getLogger("facesearch.audit")

# Probes and tooling: no tenant data behind them.
UNAUTHENTICATED_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


def _service_and_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def _presented_key_id(metadata: Metadata) -> str:
    """The id part of a presented API key (never the secret), for failure lines."""
    values = values_of(metadata, AUTHORIZATION_METADATA_KEY)
    if len(values) != 1:
        return ""
    token = values[0].strip().partition(" ")[2].strip()
    return key_id_of(token) or ""


def _objects(request: Any) -> dict[str, Any]:
    """The ids a delete request names (delete requests carry ids only, never images)."""
    if not isinstance(request, Message):
        return {}
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Runs inside the shared error interceptor: the Unauthenticated/PermissionDenied it raises are
    mapped to status codes there, like any handler's error."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        service, method = _service_and_method(handler_call_details.method)
        if handler is None or service in UNAUTHENTICATED_SERVICES:
            return handler
        audited = method.startswith("Delete")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, audited, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, False, handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )

    async def _authenticate(self, method: str, context: grpc.aio.ServicerContext) -> Principal:
        metadata = tuple(context.invocation_metadata() or ())
        try:
            principal = await self._authenticator.authenticate(metadata)
        except FaceSearchError as exc:
            audit_log.warning(
                "authentication failed",
                extra={
                    "audit": "authentication_failure",
                    "method": method,
                    "tenant": claimed_tenant(metadata),
                    "key_id": _presented_key_id(metadata),
                    "peer": context.peer(),
                    "outcome": exc.code.name,
                    "reason": exc.message,
                },
            )
            raise
        # Each RPC runs in a task of its own, so the principal ends with the call.
        set_principal(principal)
        return principal

    def _wrap_unary(
        self, method: str, audited: bool, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self._authenticate(method, context)
            if not audited:
                return await behavior(request, context)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                _audit_delete(method, principal, request, context, exc, None)
                raise
            _audit_delete(method, principal, request, context, None, response)
            return response

        return wrapped

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._authenticate(method, context)
            async for response in behavior(request, context):
                yield response

        return wrapped


def _audit_delete(
    method: str,
    principal: Principal,
    request: Any,
    context: grpc.aio.ServicerContext,
    error: BaseException | None,
    response: Any,
) -> None:
    if error is None:
        outcome = grpc.StatusCode.OK.name
    elif isinstance(error, grpc.aio.AbortError):
        code = context.code()
        outcome = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    else:
        outcome = status_of(error)[0].name if isinstance(error, Exception) else grpc.StatusCode.CANCELLED.name
    audit_log.info(
        "delete",
        extra={
            "audit": "delete",
            "method": method,
            "tenant": principal.tenant,
            "key_id": principal.credential_id,
            "objects": _objects(request),
            "outcome": outcome,
            "result": _objects(response) if response is not None else {},
            "peer": context.peer(),
        },
    )
