"""`facesearch keys create|list|revoke`: API keys of the search service (SEARCH_AUTH__MODE=api_key),
in the database the SEARCH_* settings name (embedded or SEARCH_DATABASE_URL), as the service sees it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from facesearch.errors import FaceSearchError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys", description=__doc__)
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="make a key for a tenant; the secret is printed once")
    create.add_argument("--tenant", required=True, help="the tenant every call with this key acts for")
    create.add_argument("--description", default="", help="what the key is for (shown by `keys list`)")
    create.add_argument("--json", action="store_true", help="print one JSON object (id, tenant, key, ...)")
    create.set_defaults(func=run, action=_create)

    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")
    listing.set_defaults(func=run, action=_list)

    revoke = actions.add_parser("revoke", help="revoke a key: every replica refuses it within seconds")
    revoke.add_argument("id", help="the key's id (the 12 hex digits after `fsk_`)")
    revoke.set_defaults(func=run, action=_revoke)


def _describe(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "description": record.description,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


async def _create(store: Any, args: argparse.Namespace) -> None:
    new = await store.create(args.tenant, args.description)
    if args.json:
        print(json.dumps({**_describe(new.record), "key": new.key}))
        return
    print(f"API key {new.record.id} for tenant {new.record.tenant}:\n\n  {new.key}\n")
    print("This is the only time the key is shown; it is stored as a hash. Clients send it as")
    print("`authorization: Bearer <key>` (facesearch: --api-key or FACESEARCH_API_KEY).")


async def _list(store: Any, args: argparse.Namespace) -> None:
    records = await store.list(args.tenant)
    if args.json:
        for record in records:
            print(json.dumps(_describe(record)))
        return
    if not records:
        print("no API keys")
        return
    print(f"{'id':<12}  {'tenant':<20}  {'created':<25}  {'status':<7}  description")
    for r in records:
        status = "revoked" if r.revoked else "active"
        created = r.created_at.isoformat(timespec="seconds")
        print(f"{r.id:<12}  {r.tenant:<20}  {created:<25}  {status:<7}  {r.description}")


async def _revoke(store: Any, args: argparse.Namespace) -> None:
    record = await store.revoke(args.id)
    print(f"revoked API key {record.id} of tenant {record.tenant}")


async def _with_store(action: Callable[[Any, argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> None:
    # Imported here: the search extra (asyncpg, pgserver) is only needed by this command.
    import asyncpg

    from search_service.api_keys import ApiKeyStore
    from search_service.config import SearchSettings
    from search_service.embedded import start_embedded_postgres_async
    from search_service.migrations import migrate

    settings = SearchSettings()
    embedded = None
    url = settings.database_url
    if not url:
        # Shares a running `facesearch up`'s server (pgserver counts handles; the last one stops it).
        embedded, url = await start_embedded_postgres_async(settings.data_dir)
    try:
        conn = await asyncpg.connect(url, timeout=settings.database.command_timeout_s)
        try:
            await migrate(conn)  # keys can be made before the service first ran
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            await action(ApiKeyStore(pool), args)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.cleanup)


def run(args: argparse.Namespace) -> int:
    import asyncpg

    try:
        asyncio.run(_with_store(args.action, args))
    except FaceSearchError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot use the database: {exc}", file=sys.stderr)
        return 2
    return 0
