//! Saved plans and their approvals in the shared state (`--state postgres://...`), so approvers
//! elsewhere can name a plan by its hash: `glow-run plan show HASH --state URL`, `glow-run
//! approve HASH --role security --state URL`, and a live run `--plan HASH` waiting in
//! `prompt::approve` sees a signature within a poll interval of its arrival.
//!
//! Two tables beside `glow_runs` (src/shared_state.rs), created on first use: `glow_plans` (the
//! plan file's JSON by hash, approvals left out) and `glow_plan_approvals` (one row per role
//! and principal). Every query is bounded in time; the connection is this module's own.

use crate::approval::Approval;
use crate::error::Error;
use crate::plan_file::PlanFile;
use crate::redact::Redactor;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Serialises `create table if not exists` between processes starting at the same moment.
const SCHEMA_LOCK: i64 = 0x676c_6f77_706c_616e;
/// How often a run waiting in `prompt::approve` looks for new signatures.
pub const POLL: Duration = Duration::from_millis(500);

const SCHEMA: [&str; 2] = [
    "create table if not exists glow_plans (
        hash text primary key,
        script text not null,
        plan text not null,
        created_at timestamptz not null default now()
    )",
    "create table if not exists glow_plan_approvals (
        plan_hash text not null references glow_plans (hash),
        role text not null,
        principal text not null,
        key text not null,
        signature text not null,
        time text not null,
        primary key (plan_hash, role, principal)
    )",
];

async fn bounded<T>(
    what: &str,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}s", TIMEOUT.as_secs())),
    }
}

/// Connects and makes sure the plan tables exist.
pub async fn connect(url: &str) -> Result<PgConnection, String> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| format!("invalid URL: {e}"))?
        .application_name("glow-run")
        .disable_statement_logging();
    let mut connection = bounded("connecting", options.connect()).await?;
    let mut tx = bounded("begin", connection.begin()).await?;
    bounded(
        "schema lock",
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx),
    )
    .await?;
    for statement in SCHEMA {
        bounded(
            "creating the plan tables",
            sqlx::query(statement).execute(&mut *tx),
        )
        .await?;
    }
    bounded("commit", tx.commit()).await?;
    Ok(connection)
}

pub async fn store(connection: &mut PgConnection, plan: &PlanFile) -> Result<(), String> {
    let mut bare = plan.clone();
    bare.approvals.clear();
    bounded(
        "storing the plan",
        sqlx::query(
            "insert into glow_plans (hash, script, plan) values ($1, $2, $3) on conflict (hash) do nothing",
        )
        .bind(&plan.hash)
        .bind(&plan.script.path)
        .bind(bare.to_json())
        .execute(&mut *connection),
    )
    .await?;
    for approval in &plan.approvals {
        add(connection, &plan.hash, approval).await?;
    }
    Ok(())
}

pub async fn add(
    connection: &mut PgConnection,
    hash: &str,
    approval: &Approval,
) -> Result<(), String> {
    bounded(
        "storing the approval",
        sqlx::query(
            "insert into glow_plan_approvals (plan_hash, role, principal, key, signature, time)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (plan_hash, role, principal) do update
             set key = excluded.key, signature = excluded.signature, time = excluded.time",
        )
        .bind(hash)
        .bind(&approval.role)
        .bind(&approval.principal)
        .bind(&approval.key)
        .bind(&approval.signature)
        .bind(&approval.time)
        .execute(&mut *connection),
    )
    .await
    .map(|_| ())
}

pub async fn approvals(connection: &mut PgConnection, hash: &str) -> Result<Vec<Approval>, String> {
    let rows = bounded(
        "reading approvals",
        sqlx::query(
            "select role, principal, key, signature, time from glow_plan_approvals
             where plan_hash = $1 order by time",
        )
        .bind(hash)
        .fetch_all(&mut *connection),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Approval {
            role: row.get("role"),
            principal: row.get("principal"),
            key: row.get("key"),
            signature: row.get("signature"),
            time: row.get("time"),
        })
        .collect())
}

/// The plan whose hash is (or starts with, at least 8 characters) `hash`, with its approvals.
pub async fn load(connection: &mut PgConnection, hash: &str) -> Result<PlanFile, String> {
    let rows = bounded(
        "finding the plan",
        sqlx::query("select hash, plan from glow_plans where hash like $1 || '%' limit 2")
            .bind(hash)
            .fetch_all(&mut *connection),
    )
    .await?;
    let row = match rows.as_slice() {
        [row] => row,
        [] => return Err(format!("no plan with hash {hash} in the shared state")),
        _ => {
            return Err(format!(
                "more than one plan's hash starts with {hash}: give more of it"
            ));
        }
    };
    let full: String = row.get("hash");
    let text: String = row.get("plan");
    let mut plan = PlanFile::parse(&text, &format!("plan {full} in the shared state"))?;
    plan.approvals = approvals(connection, &full).await?;
    Ok(plan)
}

/// Runs one shared-state operation to completion from synchronous code (the subcommands).
pub fn blocking<T>(
    url: &str,
    operation: impl AsyncFnOnce(&mut PgConnection) -> Result<T, String>,
) -> Result<T, Error> {
    let redactor = Redactor::new();
    let display = redactor.register_url(url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the runtime", e))?;
    runtime
        .block_on(async {
            let mut connection = connect(url).await?;
            let result = operation(&mut connection).await;
            let _ = tokio::time::timeout(TIMEOUT, connection.close()).await;
            result
        })
        .map_err(|why| Error::host(format!("shared state {display}"), redactor.redact(&why)))
}
