//! `db.migrate(dir)` and `db.pending(dir)`: the `*.sql` files of a folder in file-name order,
//! each applied in its own transaction and recorded (name, SHA-256, time, run id) in
//! `glow_migrations`; an applied file whose checksum changed is an error naming it. The
//! summary effect only reads, so a dry run lists every pending file as its own planned write.

use super::{Database, Effect, HostContext, Live, Target, fetch, map_of, statement_error, value};
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Map};
use serde_json::json;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::path::Path;

struct MigrationFile {
    name: String,
    sha256: String,
    text: String,
}

/// The `*.sql` files of `dir`, in file-name order, with their checksums.
fn migration_files(dir: &str) -> HostResult<Vec<MigrationFile>> {
    let entries = std::fs::read_dir(Path::new(dir)).map_err(|e| {
        host_error(format!(
            "sql::migrate: cannot read migrations folder {dir}: {e}"
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| host_error(format!("sql::migrate: reading {dir}: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .map_err(|e| host_error(format!("sql::migrate: reading {name}: {e}")))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| host_error(format!("sql::migrate: {name} is not UTF-8 text")))?;
        files.push(MigrationFile {
            name,
            sha256: crate::config::sha256_hex(&bytes),
            text,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// SHA-256 over every file's name and checksum, in order: the migration hash.
fn migration_hash(files: &[MigrationFile]) -> String {
    let lines: String = files
        .iter()
        .map(|f| format!("{}\t{}\n", f.name, f.sha256))
        .collect();
    crate::config::sha256_hex(lines.as_bytes())
}

/// Name -> checksum of every applied migration (empty when the history table does not exist).
fn applied_history(ctx: &HostContext, db: &Database) -> HostResult<Vec<(String, String)>> {
    let exists_sql = match db.session.target {
        Target::Postgres(_) | Target::Offline => {
            "select (to_regclass('glow_migrations') is not null) as present"
        }
        Target::Sqlite(_) => {
            "select count(*) > 0 as present from sqlite_master where type = 'table' and name = 'glow_migrations'"
        }
    };
    let rows = fetch(ctx, db, exists_sql, Vec::new())?
        .map_err(|e| statement_error(ctx, db, "sql::migrate", exists_sql, &e))?;
    let present = rows
        .first()
        .and_then(|row| row.get("present"))
        .is_some_and(|v| v.as_bool().unwrap_or(v.as_int().unwrap_or(0) != 0));
    if !present {
        return Ok(Vec::new());
    }
    let sql = "select name, sha256 from glow_migrations order by name";
    let rows = fetch(ctx, db, sql, Vec::new())?
        .map_err(|e| statement_error(ctx, db, "sql::migrate", sql, &e))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let get = |key: &str| row.get(key).map(|v| v.to_string()).unwrap_or_default();
            (get("name"), get("sha256"))
        })
        .collect())
}

/// The files not yet applied; an applied file whose checksum changed is an error naming it.
fn pending_files(
    ctx: &HostContext,
    db: &Database,
    files: Vec<MigrationFile>,
) -> HostResult<Vec<MigrationFile>> {
    let history = applied_history(ctx, db)?;
    let mut pending = Vec::new();
    for file in files {
        match history.iter().find(|(name, _)| *name == file.name) {
            Some((_, sha256)) if *sha256 != file.sha256 => {
                return Err(host_error(format!(
                    "sql::migrate: migration {} was applied with sha256 {sha256} but the file now has sha256 {}; \
                     an applied migration must not change (add a new migration instead)",
                    file.name, file.sha256
                )));
            }
            Some(_) => {}
            None => pending.push(file),
        }
    }
    Ok(pending)
}

fn name_and_sum(file: &MigrationFile) -> Dynamic {
    Dynamic::from_map(map_of([
        ("name", Dynamic::from(file.name.clone())),
        ("sha256", Dynamic::from(file.sha256.clone())),
    ]))
}

pub(super) fn pending(ctx: &HostContext, db: &Database, dir: &str) -> HostResult<Array> {
    let effect = Effect {
        namespace: "sql",
        action: "pending",
        target: dir.to_owned(),
        detail: json!({ "database": db.session.display }),
        read_only: true,
        subject: Subject::None,
    };
    ctx.read(effect, |event| {
        let files = migration_files(dir)?;
        let pending = pending_files(ctx, db, files)?;
        event.insert(
            "pending".into(),
            json!(
                pending
                    .iter()
                    .map(|f| json!({ "name": f.name, "sha256": f.sha256 }))
                    .collect::<Vec<_>>()
            ),
        );
        Ok(pending.iter().map(name_and_sum).collect())
    })
}

pub(super) fn migrate(ctx: &HostContext, db: &Database, dir: &str) -> HostResult<Map> {
    // The summary effect only reads (history, checksums) so it also runs in a dry run; each
    // pending file is its own write effect inside it, so the plan lists every migration by name.
    // Policy refuses the whole call up front when writes are not allowed.
    let effect = Effect {
        namespace: "sql",
        action: "migrations",
        target: dir.to_owned(),
        detail: json!({ "database": db.session.display }),
        read_only: true,
        subject: Subject::SqlWrite,
    };
    ctx.read(effect, |event| {
        let files = migration_files(dir)?;
        let hash = migration_hash(&files);
        event.insert("migration_hash".into(), json!(hash));
        event.insert("files".into(), json!(files.len()));
        let pending = pending_files(ctx, db, files)?;
        let mut applied = Vec::new();
        let mut planned = false;
        for file in &pending {
            planned |= apply(ctx, db, dir, file)?;
            applied.push(file);
            event.insert(
                "applied".into(),
                json!(
                    applied
                        .iter()
                        .map(|f| json!({ "name": f.name, "sha256": f.sha256 }))
                        .collect::<Vec<_>>()
                ),
            );
        }
        event.insert(
            "applied".into(),
            json!(
                applied
                    .iter()
                    .map(|f| json!({ "name": f.name, "sha256": f.sha256 }))
                    .collect::<Vec<_>>()
            ),
        );
        Ok(map_of([
            (
                "applied",
                Dynamic::from_array(applied.iter().map(|f| name_and_sum(f)).collect()),
            ),
            ("hash", Dynamic::from(hash)),
            ("planned", Dynamic::from(planned)),
        ]))
    })
}

/// Applies one file in its own transaction and records it in the history table; true when
/// it was only planned.
fn apply(ctx: &HostContext, db: &Database, dir: &str, file: &MigrationFile) -> HostResult<bool> {
    let session = &db.session;
    if session.depth.get() > 0 {
        return Err(host_error(
            "sql::migrate cannot run inside a transaction: each migration has its own",
        ));
    }
    let effect = Effect {
        namespace: "sql",
        action: "migrate",
        target: file.name.clone(),
        detail: json!({ "sha256": file.sha256, "dir": dir, "database": session.display }),
        read_only: false,
        subject: Subject::SqlWrite,
    };
    ctx.perform(
        effect,
        || Ok(true),
        |event| {
            event.insert("sha256".into(), json!(file.sha256));
            let text = file.text.clone();
            let name = file.name.clone();
            let sha256 = file.sha256.clone();
            let run_id = ctx.run_id.clone();
            let applied_at = value::rfc3339(&chrono::Utc::now());
            let result = session.run(ctx, move |mut live| async move {
                let result = match &mut live {
                    Live::Postgres { conn, .. } => {
                        apply_postgres(conn, &text, &name, &sha256, &run_id).await
                    }
                    Live::Sqlite(conn) => {
                        apply_sqlite(conn, &text, &name, &sha256, &run_id, &applied_at).await
                    }
                };
                (live, result)
            })?;
            result.map_err(|e| {
                statement_error(
                    ctx,
                    db,
                    &format!("sql::migrate {}", file.name),
                    &file.text,
                    &e,
                )
            })?;
            Ok(false)
        },
    )
}

pub async fn apply_postgres(
    conn: &mut PgConnection,
    text: &str,
    name: &str,
    sha256: &str,
    run_id: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    // Two runs migrating the same database take turns; the second finds the file applied.
    tx.execute(sqlx::raw_sql(
        "select pg_advisory_xact_lock(7405391250871245903)",
    ))
    .await?;
    tx.execute(sqlx::raw_sql(
        "create table if not exists glow_migrations (
            name text primary key,
            sha256 text not null,
            applied_at timestamptz not null default now(),
            run_id text not null
        )",
    ))
    .await?;
    let already: Option<String> =
        sqlx::query_scalar("select sha256 from glow_migrations where name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if already.is_some() {
        return tx.rollback().await;
    }
    tx.execute(sqlx::raw_sql(AssertSqlSafe(text.to_owned())))
        .await?;
    sqlx::query(
        "insert into glow_migrations (name, sha256, applied_at, run_id) values ($1, $2, now(), $3)",
    )
    .bind(name)
    .bind(sha256)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub async fn apply_sqlite(
    conn: &mut SqliteConnection,
    text: &str,
    name: &str,
    sha256: &str,
    run_id: &str,
    applied_at: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    tx.execute(sqlx::raw_sql(
        "create table if not exists glow_migrations (
            name text primary key,
            sha256 text not null,
            applied_at text not null,
            run_id text not null
        )",
    ))
    .await?;
    let already: Option<String> =
        sqlx::query_scalar("select sha256 from glow_migrations where name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if already.is_some() {
        return tx.rollback().await;
    }
    tx.execute(sqlx::raw_sql(AssertSqlSafe(text.to_owned())))
        .await?;
    sqlx::query(
        "insert into glow_migrations (name, sha256, applied_at, run_id) values (?, ?, ?, ?)",
    )
    .bind(name)
    .bind(sha256)
    .bind(applied_at)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
