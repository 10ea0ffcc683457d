"""Versioned schema migrations: append-only, the same steps on SQLite and PostgreSQL.

Never edit or reorder a step that has shipped; add a new one. A step is a list of
statements run in one transaction with its row in `schema_migrations`. `{id}` stands
for the auto-increment primary key, the one type the two databases spell differently.

Steps must stay additive (new tables, columns, indexes), so a replica of the previous
release keeps working against a database that a newer one upgraded. A step that
indexes the big `requests` table on PostgreSQL should say CONCURRENTLY and run
outside a transaction; none needs to yet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: tuple[str, ...]

    def statements(self, id_column: str) -> list[str]:
        return [s.replace("{id}", id_column) for s in self.sql]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "keys, requests, daily usage",
        (
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE,
                hint TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                models TEXT NOT NULL DEFAULT '',
                rpm INTEGER,
                tpm INTEGER,
                concurrent INTEGER,
                budget DOUBLE PRECISION,
                budget_period TEXT,
                expires_at BIGINT,
                revoked_at BIGINT,
                last_used_at BIGINT
            )""",
            "CREATE INDEX api_keys_name ON api_keys (name)",
            """CREATE TABLE requests (
                id {id},
                day TEXT NOT NULL,
                ts BIGINT NOT NULL,
                request_id TEXT NOT NULL DEFAULT '',
                key_id TEXT NOT NULL DEFAULT '',
                app TEXT NOT NULL DEFAULT '',
                end_user TEXT NOT NULL DEFAULT '',
                dialect TEXT NOT NULL DEFAULT '',
                route TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '',
                backend TEXT NOT NULL DEFAULT '',
                upstream_model TEXT NOT NULL DEFAULT '',
                stream SMALLINT NOT NULL DEFAULT 0,
                status INTEGER NOT NULL DEFAULT 0,
                error TEXT NOT NULL DEFAULT '',
                tokens_in INTEGER NOT NULL DEFAULT 0,
                tokens_out INTEGER NOT NULL DEFAULT 0,
                tokens_estimated SMALLINT NOT NULL DEFAULT 0,
                ttft_ms DOUBLE PRECISION,
                duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
                cost DOUBLE PRECISION,
                cost_source TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL DEFAULT 0
            )""",
            # Range scans for reports and pruning; a key's recent requests.
            "CREATE INDEX requests_ts ON requests (ts)",
            "CREATE INDEX requests_key_ts ON requests (key_id, ts)",
            """CREATE TABLE usage_daily (
                day TEXT NOT NULL,
                key_id TEXT NOT NULL,
                model TEXT NOT NULL,
                backend TEXT NOT NULL,
                app TEXT NOT NULL DEFAULT '',
                requests BIGINT NOT NULL DEFAULT 0,
                errors BIGINT NOT NULL DEFAULT 0,
                tokens_in BIGINT NOT NULL DEFAULT 0,
                tokens_out BIGINT NOT NULL DEFAULT 0,
                cost DOUBLE PRECISION NOT NULL DEFAULT 0,
                cost_unknown BIGINT NOT NULL DEFAULT 0,
                duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
                PRIMARY KEY (day, key_id, model, backend)
            )""",
            # Budgets sum a key's days; the primary key serves day ranges for reports.
            "CREATE INDEX usage_daily_key_day ON usage_daily (key_id, day)",
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ),
    ),
    Migration(
        2,
        "stored responses",
        (
            # OpenAI Responses with `store: true`: what GET /v1/responses/{id} answers,
            # and the input items a later `previous_response_id` brings back. `owner`
            # is the key that made it ('' when the gateway is open).
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL DEFAULT '',
                created_at BIGINT NOT NULL,
                previous_id TEXT,
                model TEXT NOT NULL DEFAULT '',
                response TEXT NOT NULL,
                input TEXT NOT NULL
            )""",
            "CREATE INDEX responses_created ON responses (created_at)",
        ),
    ),
    Migration(
        3,
        "key scopes, console sessions, used sign-in links",
        (
            "ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT ''",
            # A session's id is the SHA-256 of its cookie; the cookie itself is not kept.
            """CREATE TABLE console_sessions (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                via TEXT NOT NULL,
                groups TEXT NOT NULL DEFAULT '',
                credential TEXT NOT NULL DEFAULT '',
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                revoked_at BIGINT
            )""",
            "CREATE INDEX console_sessions_expires ON console_sessions (expires_at)",
            """CREATE TABLE signin_links (
                nonce TEXT PRIMARY KEY,
                used_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "image jobs, their files, prompt presets",
        (
            # One row per image job; the queue is its `queued` rows, oldest first. A
            # replica claims a row (owner, lease) before it submits, renews the lease while
            # it runs it, and another replica adopts the job once the lease has run out.
            """CREATE TABLE image_jobs (
                id TEXT PRIMARY KEY,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                state TEXT NOT NULL,
                model TEXT NOT NULL,
                params TEXT NOT NULL,
                key_id TEXT NOT NULL DEFAULT '',
                app TEXT NOT NULL DEFAULT '',
                end_user TEXT NOT NULL DEFAULT '',
                backend TEXT NOT NULL DEFAULT '',
                prompt_id TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL DEFAULT 0,
                owner TEXT NOT NULL DEFAULT '',
                lease_until BIGINT NOT NULL DEFAULT 0,
                cancel_requested SMALLINT NOT NULL DEFAULT 0,
                progress_value INTEGER NOT NULL DEFAULT 0,
                progress_max INTEGER NOT NULL DEFAULT 0,
                progress_node TEXT NOT NULL DEFAULT '',
                seed BIGINT,
                error TEXT NOT NULL DEFAULT '',
                started_at BIGINT,
                finished_at BIGINT,
                gpu_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
                input_image TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX image_jobs_state ON image_jobs (state, created_at)",
            "CREATE INDEX image_jobs_key ON image_jobs (key_id, created_at)",
            """CREATE TABLE image_files (
                id TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                idx INTEGER NOT NULL,
                created_at BIGINT NOT NULL,
                key_id TEXT NOT NULL DEFAULT '',
                path TEXT NOT NULL,
                mime TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                width INTEGER NOT NULL DEFAULT 0,
                height INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX image_files_job ON image_files (job_id)",
            "CREATE INDEX image_files_created ON image_files (created_at)",
            """CREATE TABLE image_presets (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                key_id TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '',
                params TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "images and GPU time in the ledger, images per minute on keys",
        (
            "ALTER TABLE requests ADD COLUMN images INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE requests ADD COLUMN gpu_ms DOUBLE PRECISION NOT NULL DEFAULT 0",
            "ALTER TABLE usage_daily ADD COLUMN images BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE usage_daily ADD COLUMN gpu_ms DOUBLE PRECISION NOT NULL DEFAULT 0",
            # A key's limit on images made per minute (images/, access/gate.py).
            "ALTER TABLE api_keys ADD COLUMN images_per_minute INTEGER",
        ),
    ),
    Migration(
        6,
        "partial rows: answers that ended before their last chunk",
        (
            # Booked with the tokens streamed until they ended (estimated).
            "ALTER TABLE requests ADD COLUMN partial SMALLINT NOT NULL DEFAULT 0",
            "ALTER TABLE usage_daily ADD COLUMN partial BIGINT NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        7,
        "vector operations' points in the ledger, vector sharing grants",
        (
            # Points an operation wrote or returned (vectors/: upserts, deletes by id,
            # search hits, scrolled and retrieved points).
            "ALTER TABLE requests ADD COLUMN points INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE usage_daily ADD COLUMN points BIGINT NOT NULL DEFAULT 0",
            # An app (a key name's namespace) may read another app's collection, named
            # physically (APP__NAME); `aistack vectors grant`. A change bumps the access
            # stamp, so every replica reloads them.
            """CREATE TABLE vector_grants (
                collection TEXT NOT NULL,
                app TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (collection, app)
            )""",
        ),
    ),
)
