"""Versioned schema migrations, applied at start-up under a PostgreSQL advisory lock so replicas
starting together cannot race; each version runs in its own transaction and is recorded in
`schema_migrations`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

# Width of the embedding column. The embedder's GetModelInfo must agree (server.py checks).
EMBEDDING_DIM = 512

# Any constant both replicas agree on; "facesearch" in ASCII, to stay clear of other users' locks.
MIGRATION_LOCK_KEY = 0x66616365736561


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "collections, photos, persons, faces",
        (
            "CREATE EXTENSION IF NOT EXISTS vector",
            """
            CREATE TABLE collections (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                display_name text NOT NULL DEFAULT '',
                settings jsonb NOT NULL DEFAULT '{}'::jsonb,
                -- True once the collection's partial HNSW index exists (large collections only).
                hnsw_indexed boolean NOT NULL DEFAULT false,
                created_at timestamptz NOT NULL DEFAULT now(),
                UNIQUE (tenant, name)
            )
            """,
            """
            CREATE TABLE photos (
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                id bigint GENERATED ALWAYS AS IDENTITY,
                external_id text NOT NULL,
                content_hash bytea NOT NULL,
                metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
                -- When the photo was taken, or indexed when the caller did not say.
                taken_at timestamptz NOT NULL DEFAULT now(),
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (collection_id, id),
                UNIQUE (collection_id, external_id)
            )
            """,
            """
            CREATE TABLE persons (
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                id bigint GENERATED ALWAYS AS IDENTITY,
                external_id text NOT NULL,
                metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
                -- The template face (a faces row with this person_id); NULL until one is enrolled.
                best_face_id bigint,
                template_quality real,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (collection_id, id),
                UNIQUE (collection_id, external_id)
            )
            """,
            f"""
            CREATE TABLE faces (
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                id bigint GENERATED ALWAYS AS IDENTITY,
                photo_id bigint,
                person_id bigint,
                box real[] NOT NULL,
                landmarks real[],
                det_score real NOT NULL,
                blur_score real NOT NULL,
                face_size real NOT NULL,
                yaw real NOT NULL,
                pitch real NOT NULL,
                roll real NOT NULL,
                quality_score real NOT NULL,
                embedding vector({EMBEDDING_DIM}) NOT NULL,
                PRIMARY KEY (collection_id, id),
                FOREIGN KEY (collection_id, photo_id) REFERENCES photos (collection_id, id) ON DELETE CASCADE,
                FOREIGN KEY (collection_id, person_id) REFERENCES persons (collection_id, id) ON DELETE CASCADE,
                CHECK (photo_id IS NOT NULL OR person_id IS NOT NULL)
            )
            """,
            # 2,052-byte vectors would go to TOAST by default and every exact scan would pay a
            # detoast per row; PLAIN keeps them in the heap page (a row still fits one 8 KiB page).
            "ALTER TABLE faces ALTER COLUMN embedding SET STORAGE PLAIN",
            # The PK (collection_id, id) serves per-collection scans; these serve the cascades and
            # the replace-a-photo's-faces path.
            "CREATE INDEX faces_photo_idx ON faces (collection_id, photo_id) WHERE photo_id IS NOT NULL",
            "CREATE INDEX faces_person_idx ON faces (collection_id, person_id) WHERE person_id IS NOT NULL",
            "CREATE INDEX photos_metadata_idx ON photos USING gin (metadata jsonb_path_ops)",
        ),
    ),
    Migration(
        2,
        "face thumbnails; photos listed newest first",
        (
            # A table of its own keeps faces rows (scanned by every exact search) narrow; the
            # cascade erases a thumbnail with its face, photo or collection.
            """
            CREATE TABLE face_thumbnails (
                collection_id bigint NOT NULL,
                face_id bigint NOT NULL,
                jpeg bytea NOT NULL,
                PRIMARY KEY (collection_id, face_id),
                FOREIGN KEY (collection_id, face_id) REFERENCES faces (collection_id, id) ON DELETE CASCADE
            )
            """,
            # ListPhotos' default order, paged by keyset.
            "CREATE INDEX photos_taken_idx ON photos (collection_id, taken_at DESC, id DESC)",
        ),
    ),
    Migration(
        3,
        "collection counters and faces version kept by triggers; face rows stay inline",
        (
            # GetCollection/ListCollections read these instead of counting rows. `faces_version`
            # changes in the same transaction as every change of the collection's faces, so a
            # replica's descriptor cache (search_service/descriptor_cache.py) knows when it is stale.
            """
            ALTER TABLE collections
                ADD COLUMN photo_count bigint NOT NULL DEFAULT 0,
                ADD COLUMN face_count bigint NOT NULL DEFAULT 0,
                ADD COLUMN person_count bigint NOT NULL DEFAULT 0,
                ADD COLUMN faces_version bigint NOT NULL DEFAULT 0
            """,
            """
            UPDATE collections c SET
                photo_count = (SELECT count(*) FROM photos WHERE collection_id = c.id),
                face_count = (SELECT count(*) FROM faces WHERE collection_id = c.id),
                person_count = (SELECT count(*) FROM persons WHERE collection_id = c.id)
            """,
            # Statement-level triggers with transition tables: one UPDATE of the collection row per
            # statement (a COPY of a thousand faces included), whichever code path writes, cascades
            # included. Only the branch of TG_OP runs, so each statement names only its own table.
            *(
                f"""
                CREATE FUNCTION {table}_maintain_collection() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF TG_OP = 'INSERT' THEN
                        UPDATE collections c SET {counter} = c.{counter} + d.n{bump}
                        FROM (SELECT collection_id, count(*) AS n FROM new_rows GROUP BY collection_id) d
                        WHERE c.id = d.collection_id;
                    ELSIF TG_OP = 'DELETE' THEN
                        UPDATE collections c SET {counter} = c.{counter} - d.n{bump}
                        FROM (SELECT collection_id, count(*) AS n FROM old_rows GROUP BY collection_id) d
                        WHERE c.id = d.collection_id;
                    ELSE
                        UPDATE collections c SET {counter} = c.{counter}{bump}
                        FROM (SELECT DISTINCT collection_id FROM new_rows) d WHERE c.id = d.collection_id;
                    END IF;
                    RETURN NULL;
                END $$
                """
                for table, counter, bump in (
                    ("faces", "face_count", ", faces_version = c.faces_version + 1"),
                    ("photos", "photo_count", ""),
                    ("persons", "person_count", ""),
                )
            ),
            *(
                f"""
                CREATE TRIGGER {table}_{op.lower()}_maintain_collection AFTER {op} ON {table}
                REFERENCING {"NEW TABLE AS new_rows" if op != "DELETE" else "OLD TABLE AS old_rows"}
                FOR EACH STATEMENT EXECUTE FUNCTION {table}_maintain_collection()
                """
                for table in ("faces", "photos", "persons")
                for op in ("INSERT", "DELETE")
            ),
            # Faces are replaced, not updated, today; a future UPDATE still moves the version.
            """
            CREATE TRIGGER faces_update_maintain_collection AFTER UPDATE ON faces
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION faces_maintain_collection()
            """,
            # A face row is ~2.2 kB, over the 2,032-byte TOAST threshold: with `box` and `landmarks`
            # EXTENDED the toaster moved them out of line (a TOAST write per face, a detoast per
            # read). PLAIN keeps the whole row in its heap page (8 kB), as `embedding` already is.
            "ALTER TABLE faces ALTER COLUMN box SET STORAGE PLAIN, ALTER COLUMN landmarks SET STORAGE PLAIN",
        ),
    ),
    Migration(
        4,
        "api keys, the key of opaque public ids",
        (
            # A key is `fsk_<id>_<secret>`; only its SHA-256 is stored. The id is public (it names
            # the key in lists, logs and revocation), the secret is 256 random bits.
            """
            CREATE TABLE api_keys (
                id text PRIMARY KEY,
                tenant text NOT NULL,
                description text NOT NULL DEFAULT '',
                secret_hash bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                revoked_at timestamptz
            )
            """,
            "CREATE INDEX api_keys_tenant_idx ON api_keys (tenant, created_at)",
            # Secrets every replica must share; made here, once, by PostgreSQL's strong random source.
            """
            CREATE TABLE service_secrets (
                name text PRIMARY KEY,
                secret bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            INSERT INTO service_secrets (name, secret)
            VALUES ('public_ids', sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())))
            """,
        ),
    ),
)


async def migrate(conn: asyncpg.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Applies the migrations not yet recorded; returns the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            async with conn.transaction():
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                    migration.version,
                    migration.description,
                )
            log.info("applied migration %d: %s", migration.version, migration.description)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
