//! The cluster database's schema, as numbered migrations applied in order
//! (`stormcell db migrate`). Tables mirror `stormcell_model::rows`.

use tokio_postgres::Client;

use super::{query_error, DbError};

/// One migration: a number, a name and its SQL.
pub struct Migration {
    /// Applied in increasing order; never reused.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "configuration, version rows, push and sync events",
        sql: r#"
CREATE TABLE devices (
    name text PRIMARY KEY,
    address text NOT NULL,
    http_url text NOT NULL DEFAULT '',
    credential_sha256 text NOT NULL
);
CREATE TABLE services (
    name text PRIMARY KEY,
    closed boolean NOT NULL DEFAULT false
);
CREATE TABLE bindings (
    service text NOT NULL REFERENCES services(name),
    device text NOT NULL REFERENCES devices(name),
    writable boolean NOT NULL DEFAULT true,
    disabled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (service, device)
);
CREATE TABLE repositories (
    name text PRIMARY KEY,
    service text REFERENCES services(name),
    maintenance text
);
CREATE TABLE versions (
    repo text NOT NULL,
    device text NOT NULL,
    version bigint NOT NULL,
    writing boolean NOT NULL DEFAULT false,
    write_props jsonb,
    lock_owner text,
    digest bigint,
    PRIMARY KEY (repo, device)
);
CREATE TABLE push_events (
    id bigserial PRIMARY KEY,
    repo text NOT NULL,
    device text NOT NULL,
    pusher text NOT NULL,
    started_ms bigint NOT NULL,
    updates jsonb NOT NULL,
    accepted boolean NOT NULL,
    kind text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_events_repo ON push_events (repo, id);
CREATE TABLE sync_events (
    id bigserial PRIMARY KEY,
    repo text NOT NULL,
    device text NOT NULL,
    from_device text NOT NULL,
    version_before bigint,
    version_after bigint,
    waited_ms bigint NOT NULL,
    result text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
"#,
    },
    Migration {
        version: 2,
        name: "the primary generation (PROTOCOL.md 12)",
        sql: r#"
CREATE TABLE cluster_generation (
    id integer PRIMARY KEY CHECK (id = 1),
    promotions bigint NOT NULL
);
INSERT INTO cluster_generation (id, promotions) VALUES (1, 0);
"#,
    },
    Migration {
        version: 3,
        name: "salvage bundles written by thaws (PROTOCOL.md 12)",
        sql: r#"
CREATE TABLE salvage_bundles (
    id bigserial PRIMARY KEY,
    repo text NOT NULL,
    device text NOT NULL,
    version bigint,
    written_ms bigint NOT NULL,
    location text NOT NULL,
    refs jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX salvage_bundles_repo ON salvage_bundles (repo, id);
"#,
    },
    Migration {
        version: 4,
        name: "demotes counted per device (PROTOCOL.md 12, claims after a demote)",
        // A trigger, so every deletion of a version row counts, in the same transaction,
        // whichever command deletes it (a thaw's demote, `device remove`).
        sql: r#"
CREATE TABLE demotions (
    repo text NOT NULL,
    device text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (repo, device)
);
CREATE FUNCTION count_demotion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO demotions (repo, device, count) VALUES (OLD.repo, OLD.device, 1)
    ON CONFLICT (repo, device) DO UPDATE SET count = demotions.count + 1;
    RETURN OLD;
END
$$;
CREATE TRIGGER versions_demoted AFTER DELETE ON versions
    FOR EACH ROW EXECUTE FUNCTION count_demotion();
"#,
    },
];

/// Applies every migration not applied yet, in one transaction per migration, and returns
/// the ones it applied. Concurrent runs wait for each other.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static Migration>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(query_error)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(query_error)?;
        // One migrator at a time: the lock lasts until this transaction ends.
        tx.execute("SELECT pg_advisory_xact_lock(7306236401)", &[])
            .await
            .map_err(query_error)?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .map_err(query_error)?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(query_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        applied.push(m);
    }
    Ok(applied)
}

/// The applied migrations' numbers, or empty when none is.
pub async fn applied(client: &Client) -> Result<Vec<i32>, DbError> {
    let exists = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(query_error)?;
    if !exists.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(query_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
