"""Who is calling: each call's credential (API key, JWT, or in mode `none` the bare tenant header)
becomes a verified Principal, resolved once per call by the auth interceptor and read by the
servicer through `current_principal()`, so every RPC, present or future, acts for that tenant."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import jwt

from facesearch.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from search_service import validation
from search_service.api_keys import ApiKey, ApiKeyStore, hash_key, key_id_of
from search_service.config import AuthMode, AuthSettings, JwtSettings, SearchSettings

log = logging.getLogger(__name__)

TENANT_METADATA_KEY = "x-tenant-id"
AUTHORIZATION_METADATA_KEY = "authorization"
# API keys looked up recently, per replica (bounded, so random key ids cannot grow it).
MAX_CACHED_KEYS = 10_000

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True)
class Principal:
    """A verified caller: the tenant it acts for and what vouched for it (an API key id, `jwt:<sub>`,
    or "" in mode none)."""

    tenant: str
    credential_id: str = ""


_principal: ContextVar[Principal | None] = ContextVar("facesearch_principal", default=None)


def set_principal(principal: Principal) -> None:
    """Called by the auth interceptor in the call's own task (its context ends with the call)."""
    _principal.set(principal)


def current_principal() -> Principal:
    """The caller of the RPC being handled. Fails closed: a handler reached without the auth
    interceptor is refused, never run for some default tenant."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("the call was not authenticated")
    return principal


def values_of(metadata: Metadata, key: str) -> list[str]:
    return [v.decode(errors="replace") if isinstance(v, bytes) else v for k, v in metadata if k == key]


def claimed_tenant(metadata: Metadata) -> str:
    """The x-tenant-id a call sends, if exactly one (for audit lines of failed calls)."""
    values = values_of(metadata, TENANT_METADATA_KEY)
    return values[0][:128] if len(values) == 1 else ""


def bearer_token(metadata: Metadata) -> str:
    values = values_of(metadata, AUTHORIZATION_METADATA_KEY)
    if not values:
        raise Unauthenticated("missing credentials: send `authorization: Bearer <API key or token>` metadata")
    if len(values) > 1:
        raise Unauthenticated("more than one `authorization` metadata value")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed `authorization` metadata: expected `Bearer <API key or token>`")
    return token.strip()


def check_tenant_header(metadata: Metadata, tenant: str) -> None:
    """A credential decides the tenant; an `x-tenant-id` naming another one is refused rather than
    ignored, so a misconfigured client learns at once that it is not acting for that tenant."""
    for value in values_of(metadata, TENANT_METADATA_KEY):
        if value != tenant:
            raise PermissionDenied("the credential does not grant the tenant named in x-tenant-id")


class Authenticator(Protocol):
    async def authenticate(self, metadata: Metadata) -> Principal: ...


class HeaderTenant:
    """Mode `none`: the tenant is the call's single x-tenant-id (or the default tenant). Trusts the
    caller, so the service refuses it beyond loopback unless set explicitly."""

    def __init__(self, default_tenant: str) -> None:
        self._default = default_tenant

    async def authenticate(self, metadata: Metadata) -> Principal:
        values = values_of(metadata, TENANT_METADATA_KEY)
        if len(values) > 1:
            # Taking the first would let a caller shadow a header a gateway appends.
            raise InvalidArgument(f"more than one `{TENANT_METADATA_KEY}` metadata value")
        if values:
            return Principal(validation.tenant(values[0]))
        if not self._default:
            raise InvalidArgument(f"the call needs `{TENANT_METADATA_KEY}` metadata")
        return Principal(self._default)


class ApiKeyAuthenticator:
    """Mode `api_key`. What a replica read about a key is trusted for `ttl_s`, so a revocation
    reaches every replica within that long without a lookup per call."""

    def __init__(self, store: ApiKeyStore, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()

    async def _lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            record = await self._store.get(key_id)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError) as exc:
            raise Unavailable("cannot check the API key: the database is unavailable") from exc
        self._cache[key_id] = (now, record)
        self._cache.move_to_end(key_id)
        while len(self._cache) > MAX_CACHED_KEYS:
            self._cache.popitem(last=False)
        return record

    async def authenticate(self, metadata: Metadata) -> Principal:
        key = bearer_token(metadata)
        key_id = key_id_of(key)
        if key_id is None:
            raise Unauthenticated("malformed API key: expected fsk_<id>_<secret> as `facesearch keys create` prints")
        record = await self._lookup(key_id)
        if record is None or not hmac.compare_digest(record.secret_hash, hash_key(key)):
            raise Unauthenticated(f"unknown API key {key_id}")
        if record.revoked:
            raise Unauthenticated(f"API key {key_id} is revoked")
        check_tenant_header(metadata, record.tenant)
        return Principal(record.tenant, key_id)


class JwtAuthenticator:
    """Mode `jwt`: signature (JWKS URL or a PEM public key), issuer, audience, expiry; the tenant is
    the configured claim."""

    def __init__(self, settings: JwtSettings) -> None:
        if not settings.issuer or not settings.audience:
            raise ValueError("SEARCH_AUTH__MODE=jwt needs SEARCH_AUTH__JWT__ISSUER and SEARCH_AUTH__JWT__AUDIENCE")
        if bool(settings.jwks_url) == (settings.public_key_file is not None):
            raise ValueError(
                "SEARCH_AUTH__MODE=jwt needs exactly one of SEARCH_AUTH__JWT__JWKS_URL and "
                "SEARCH_AUTH__JWT__PUBLIC_KEY_FILE"
            )
        self._settings = settings
        self._public_key = settings.public_key_file.read_text() if settings.public_key_file else None
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=settings.jwks_cache_s)
            if settings.jwks_url
            else None
        )

    async def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self._public_key
        try:
            # PyJWKClient fetches with urllib (blocking), at most once per lifespan.
            return (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable(f"cannot fetch the identity provider's keys: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc

    async def authenticate(self, metadata: Metadata) -> Principal:
        token = bearer_token(metadata)
        s = self._settings
        key = await self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated(f"token has no `{s.tenant_claim}` claim naming a tenant")
        try:
            validation.tenant(tenant)
        except InvalidArgument:
            raise Unauthenticated(f"token's `{s.tenant_claim}` claim is not a valid tenant") from None
        check_tenant_header(metadata, tenant)
        return Principal(tenant, f"jwt:{str(claims.get('sub', ''))[:128]}")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: SearchSettings) -> None:
    """Mode `none` trusts whatever tenant a caller names: refuse it on an address beyond loopback
    unless SEARCH_AUTH__MODE=none was set explicitly."""
    auth = settings.auth
    if auth.mode is not AuthMode.NONE or is_loopback(settings.grpc_host):
        return
    if "mode" in auth.model_fields_set:
        log.warning(
            "SEARCH_AUTH__MODE=none on %s: any caller that reaches this port acts for any tenant", settings.grpc_host
        )
        return
    raise RuntimeError(
        f"the search service would listen on {settings.grpc_host} without authentication, so anyone reaching the "
        "port could read and delete any tenant's faces. Set SEARCH_AUTH__MODE=api_key (and make keys with "
        "`facesearch keys create --tenant T`) or SEARCH_AUTH__MODE=jwt, or bind SEARCH_GRPC_HOST=127.0.0.1; "
        "set SEARCH_AUTH__MODE=none explicitly only behind something that authenticates callers itself."
    )


def build_authenticator(auth: AuthSettings, default_tenant: str, store: ApiKeyStore) -> Authenticator:
    if auth.mode is AuthMode.API_KEY:
        return ApiKeyAuthenticator(store, auth.key_cache_ttl_s)
    if auth.mode is AuthMode.JWT:
        return JwtAuthenticator(auth.jwt)
    return HeaderTenant(default_tenant)
