"""gRPC server plumbing shared by both services: the one interceptor that maps domain errors to
status codes, records per-RPC metrics and each call's deadline (facesearch.deadline), health,
reflection, server options and graceful shutdown (health NOT_SERVING first, then
`server.stop(grace)`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facesearch import memory, wire
from facesearch.deadline import set_call_deadline
from facesearch.errors import is_infrastructure_error, status_of
from facesearch.observability import RPC_HANDLED, RPC_LATENCY
from facesearch.tls import ServerTlsSettings, server_credentials

log = logging.getLogger(__name__)

# Methods of this project's services (their request streams handle wire.Malformed items).
OWN_PACKAGE_PREFIX = "/facesearch."


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions into status codes (domain errors keep their message; anything else is
    INTERNAL with a generic message and the traceback in the log) and records calls/latency.

    Every request passes facesearch.wire's check first: a body that does not parse or a bad field
    is INVALID_ARGUMENT before the handler runs. Request streams of our own services get unparsable
    items as `wire.Malformed` and answer each as that item's error, so the stream goes on."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        method = full_method.rsplit("/", 1)[-1]
        deserializer = wire.tolerant(handler.request_deserializer, method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, check=True),
                deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream, check=True),
                deserializer,
                handler.response_serializer,
            )
        # Request streams: only our services know how to answer a Malformed item on its own.
        if not full_method.startswith(OWN_PACKAGE_PREFIX):
            deserializer = handler.request_deserializer
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary, check=False),
                deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream, check=False),
            deserializer,
            handler.response_serializer,
        )

    def _record(self, method: str, started: float, code: grpc.StatusCode) -> None:
        RPC_HANDLED.labels(self._service, method, code.name).inc()
        RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - started)

    async def _fail(self, method: str, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        code, message = status_of(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("unhandled error in %s", method)
        elif is_infrastructure_error(exc):
            log.warning("%s: %s: %s", method, exc.__class__.__name__, exc)
        await context.abort(code, message)

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]], check: bool
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            # Calls made for this one (search -> embedder) finish inside its deadline; every RPC
            # runs in a task of its own, so the value needs no reset.
            set_call_deadline(context.time_remaining())
            try:
                if check:
                    wire.check_request(request)
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = _aborted_code(context)
                raise
            except Exception as exc:
                code = status_of(exc)[0]
                await self._fail(method, context, exc)
            finally:
                self._record(method, started, code)

        return wrapped

    def _wrap_stream(self, method: str, behavior: Callable[..., Any], check: bool) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A handler that writes with `context.write()` itself and returns (grpc's own
            # Health.Watch): wrapped like a unary one, never iterated.
            return self._wrap_unary(method, behavior, check)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> None:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            # Calls made for this one (search -> embedder) finish inside its deadline.
            set_call_deadline(context.time_remaining())
            try:
                if check:
                    wire.check_request(request)
                # Written here rather than yielded to grpc: a write that fails because the client
                # went away then ends the call quietly as CANCELLED (grpc itself would log each
                # such failure at ERROR), and the handler's generator is closed right away.
                responses = behavior(request, context)
                try:
                    async for response in responses:
                        try:
                            await context.write(response)
                        except Exception:
                            code = grpc.StatusCode.CANCELLED
                            log.debug("%s: the client is gone; ending the stream", method)
                            return
                finally:
                    await responses.aclose()
                    memory.trim_soon()
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = _aborted_code(context)
                raise
            except Exception as exc:
                code = status_of(exc)[0]
                await self._fail(method, context, exc)
            finally:
                self._record(method, started, code)

        return wrapped


def _aborted_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


@dataclass(frozen=True)
class ServerOptions:
    """Transport settings both services expose through their settings classes."""

    host: str
    port: int
    max_message_bytes: int
    max_connection_age_s: float
    max_connection_age_grace_s: float
    keepalive_time_s: float
    keepalive_timeout_s: float
    tls: ServerTlsSettings | None = None
    reflection: bool = True
    # A plaintext port serving grpc.health.v1 only (0 = none): kubelet's gRPC probes speak no TLS.
    health_port: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> ServerOptions:
        """From a service's settings class: both name these fields alike (grpc_host, grpc_port, ...)."""
        return cls(
            host=settings.grpc_host,
            port=settings.grpc_port,
            max_message_bytes=settings.max_message_bytes,
            max_connection_age_s=settings.max_connection_age_s,
            max_connection_age_grace_s=settings.max_connection_age_grace_s,
            keepalive_time_s=settings.keepalive_time_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            tls=settings.tls,
            reflection=settings.reflection,
            health_port=settings.health_port,
        )

    def channel_args(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # Close connections after a while (with a grace) so clients re-resolve DNS and new
            # pods behind a headless Service get traffic.
            ("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000)),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]


class GrpcServer:
    """A grpc.aio server with the interceptor, health and reflection wired in.

    Health reports NOT_SERVING until `set_serving()` (call it once models are warm / the database
    is ready), and again from the start of `stop()`. `interceptors` run inside the shared one, so
    the errors they raise are mapped like any handler's.
    """

    def __init__(
        self,
        service_label: str,
        options: ServerOptions,
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.options = options
        self.server = grpc.aio.server(
            interceptors=[ErrorAndMetricsInterceptor(service_label), *interceptors],
            options=options.channel_args(),
        )
        # Set when stopping starts: long request streams stop taking requests, answer what they
        # took and end with UNAVAILABLE ("resend the rest") well before the grace runs out.
        self.draining = asyncio.Event()
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self.port = 0
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0

    def add_service(self, full_name: str, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> None:
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    async def start(self) -> int:
        """Binds, starts serving (health NOT_SERVING) and returns the port bound."""
        if self.options.reflection:
            reflection.enable_server_reflection(
                [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
            )
        address = f"{self.options.host}:{self.options.port}"
        tls = self.options.tls
        if tls is not None and tls.enabled:
            self.port = self.server.add_secure_port(address, server_credentials(tls))
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {address}")
        if self.options.health_port:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{self.options.host}:{self.options.health_port}")
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self._health_server is not None:
            await self._health_server.start()
        return self.port

    async def set_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self._service_names):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, tell open streams to wrap up, refuse new calls, give in-flight
        calls `grace_s` to finish."""
        self.draining.set()
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        if self._health_server is not None:
            await self._health_server.stop(0)


async def run_until_signalled(
    servers: Iterable[GrpcServer],
    grace_s: float,
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Waits for SIGTERM or SIGINT, then stops every server gracefully and runs `on_stopped`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining for up to %.1fs", grace_s)
    await asyncio.gather(*(server.stop(grace_s) for server in servers))
    if on_stopped is not None:
        await on_stopped()
    log.info("stopped")
