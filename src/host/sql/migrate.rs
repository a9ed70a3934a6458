//! The statements that apply one migration file, per engine: in one transaction, the history
//! table created when missing, a file already recorded skipped, the file's text, then its row.

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

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
