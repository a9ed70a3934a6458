//! `--state postgres://...`: a team's shared PostgreSQL for run history and the release lock.
//!
//! A live run takes a session-level advisory lock keyed on (script, environment) before it
//! starts, so two people cannot release the same thing at once; a dry run takes no lock. The
//! lock lives as long as the connection, so a killed run frees it. Each run is recorded in
//! `glow_runs` (started, then updated at `run_end`), which `glow-run runs --state URL` lists.
//! The environment is `--var env=` (or `--var environment=`), else "default".
//!
//! Crash consistency: the row records the holder's database session, so a run killed with -9
//! (its session, and so its lock, gone) reads as `interrupted`, not `running` for ever
//! (`shared_state/lock.rs`). `--wait-lock` queues behind the holder; `glow-run unlock` ends a
//! stuck holder's session, recorded with who and why (`shared_state/unlock.rs`). A live run
//! whose session is ended stops itself (a watchdog pings the session every second), so a run
//! that lost the lock never goes on deploying beside the next one.

mod lock;
mod unlock;

pub use unlock::unlock;

use crate::cancel::{Cancel, CancelReason};
use crate::config::{Mode, RunSettings, sha256_hex};
use crate::error::Error;
use crate::journal::Sink;
use crate::redact::Redactor;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a live run checks that its session (and so its lock) is still there.
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);
/// Serialises `create table if not exists` between runs that start at the same moment.
const SCHEMA_LOCK: i64 = 0x676c_6f77_7275_6e00;

const SCHEMA: &str = "create table if not exists glow_runs (
    run_id text primary key,
    script text not null,
    sha256 text not null,
    mode text not null,
    environment text not null,
    tag text,
    initiator text,
    lock_key bigint,
    started_at timestamptz not null default now(),
    ended_at timestamptz,
    outcome text not null default 'running',
    exit_code integer,
    duration_ms bigint
)";

/// Columns added for crash consistency: the holder's session, host and pid, and `unlock`'s
/// record of who ended it and why.
const SCHEMA_HOLDER: &str = "alter table glow_runs
    add column if not exists backend_pid integer,
    add column if not exists host text,
    add column if not exists pid integer,
    add column if not exists unlocked_by text,
    add column if not exists unlock_reason text,
    add column if not exists unlocked_at timestamptz";

/// The shared state of one run: its connection holds the release lock until the run ends.
pub struct SharedState {
    connection: Arc<Mutex<Option<PgConnection>>>,
    /// Set when the session was ended under the run (by `glow-run unlock`).
    lost: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    run_id: String,
    display_url: String,
}

/// Which environment a run releases to (part of the lock key).
pub fn environment(settings: &RunSettings) -> String {
    settings
        .vars
        .get("env")
        .or_else(|| settings.vars.get("environment"))
        .cloned()
        .unwrap_or_else(|| "default".to_owned())
}

/// How a script is named in the lock key and the history (`./x.rhai` and `x.rhai` are one).
fn script_name(script: &str) -> String {
    script.trim_start_matches("./").to_owned()
}

fn lock_key(script: &str, environment: &str) -> i64 {
    let digest = sha256_hex(format!("glow-run release lock\0{script}\0{environment}").as_bytes());
    i64::from_str_radix(&digest[..15], 16).unwrap_or(0)
}

async fn with_timeout<T>(
    what: &str,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| format!("invalid URL: {e}"))?;
    let options = options
        .application_name("glow-run")
        .disable_statement_logging();
    let mut connection = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => {
            return Err(format!(
                "cannot connect within {}s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let mut tx = with_timeout("begin", connection.begin()).await?;
    with_timeout(
        "schema lock",
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx),
    )
    .await?;
    with_timeout("creating glow_runs", sqlx::query(SCHEMA).execute(&mut *tx)).await?;
    with_timeout(
        "updating glow_runs",
        sqlx::query(SCHEMA_HOLDER).execute(&mut *tx),
    )
    .await?;
    with_timeout("commit", tx.commit()).await?;
    Ok(connection)
}

impl SharedState {
    /// Connects, takes the release lock for a live run (waiting up to `--wait-lock`) and
    /// records the run as started; a live run's session is then watched (see the module doc).
    pub fn open(
        url: &str,
        settings: &RunSettings,
        run_id: &str,
        initiator: &str,
        runtime: &tokio::runtime::Handle,
        redactor: &Redactor,
        cancel: &Arc<Cancel>,
    ) -> Result<Arc<Self>, Error> {
        let display_url = redactor.register_url(url);
        let context = format!("shared state {display_url}");
        let script = script_name(&settings.source_name);
        let environment = environment(settings);
        let key = lock_key(&script, &environment);
        let live = settings.mode == Mode::Live;
        let what = format!("{script} (environment {environment})");
        let connection = runtime.block_on(async {
            let mut connection = connect(url).await?;
            if live {
                lock::take(&mut connection, key, &what, settings.flags.wait_lock).await?;
            }
            with_timeout(
                "recording the run",
                sqlx::query(
                    "insert into glow_runs (run_id, script, sha256, mode, environment, tag, initiator, lock_key, backend_pid, host, pid)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, pg_backend_pid(), $9, $10)",
                )
                .bind(run_id)
                .bind(&script)
                .bind(&settings.sha256)
                .bind(settings.mode.as_str())
                .bind(&environment)
                .bind(settings.vars.get("tag"))
                .bind(initiator)
                .bind(live.then_some(key))
                .bind(host_name())
                .bind(std::process::id() as i32)
                .execute(&mut connection),
            )
            .await?;
            Ok::<_, String>(connection)
        });
        let connection = connection.map_err(|why| Error::host(&context, redactor.redact(&why)))?;
        let state = Arc::new(Self {
            connection: Arc::new(Mutex::new(Some(connection))),
            lost: Arc::new(AtomicBool::new(false)),
            runtime: runtime.clone(),
            run_id: run_id.to_owned(),
            display_url,
        });
        if live {
            state.watch(url.to_owned(), cancel.clone());
        }
        Ok(state)
    }

    /// Stops the run when its session disappears: a run that lost the lock must not go on.
    fn watch(&self, url: String, cancel: Arc<Cancel>) {
        let connection = self.connection.clone();
        let lost = self.lost.clone();
        let run_id = self.run_id.clone();
        let display_url = self.display_url.clone();
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(WATCHDOG_EVERY).await;
                let mut guard = connection.lock().await;
                let Some(conn) = guard.as_mut() else { return };
                let ping = tokio::time::timeout(QUERY_TIMEOUT, sqlx::query("select 1").execute(conn)).await;
                if matches!(ping, Ok(Ok(_))) {
                    continue;
                }
                guard.take();
                lost.store(true, Ordering::SeqCst);
                let why = unlock::reason_for(&url, &run_id).await.unwrap_or_else(|| {
                    "its database session was ended or lost".to_owned()
                });
                eprintln!(
                    "error: run {run_id} lost the release lock in shared state {display_url}: {why}; stopping the run"
                );
                cancel.cancel_run(CancelReason::Interrupted);
                return;
            }
        });
    }

    fn record_end(&self, end: &crate::event::RunEnd) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(mut connection) = self
            .runtime
            .block_on(async { self.connection.lock().await.take() })
        else {
            return Ok(());
        };
        let outcome = end.outcome.clone();
        let exit_code = end.exit_code;
        let duration_ms = i64::try_from(end.duration_ms).unwrap_or(i64::MAX);
        let run_id = self.run_id.clone();
        // Closing the connection releases the lock.
        self.runtime.block_on(async move {
            let result = with_timeout(
                "recording the end of the run",
                sqlx::query(
                    "update glow_runs set ended_at = now(), outcome = $2, exit_code = $3, duration_ms = $4
                     where run_id = $1",
                )
                .bind(&run_id)
                .bind(&outcome)
                .bind(exit_code)
                .bind(duration_ms)
                .execute(&mut connection),
            )
            .await;
            let _ = tokio::time::timeout(QUERY_TIMEOUT, connection.close()).await;
            result.map(|_| ())
        })
    }
}

impl Sink for SharedState {
    /// Only `run_end` matters here; it is emitted on the engine thread, never on a runtime
    /// worker, so blocking on the runtime is allowed.
    fn event(&self, event: &crate::event::Event, _line: &str) {
        if let crate::event::Body::RunEnd(end) = &event.body
            && let Err(why) = self.record_end(end)
        {
            eprintln!("warning: shared state {}: {why}", self.display_url);
        }
    }
}

/// One row of `glow-run runs --state URL`.
pub struct SharedRun {
    pub run_id: String,
    pub script: String,
    pub mode: String,
    pub environment: String,
    pub outcome: String,
    pub duration_ms: Option<i64>,
    pub tag: Option<String>,
    pub initiator: Option<String>,
}

/// The most recent runs recorded in the shared state, newest first.
pub fn list(url: &str, limit: usize) -> Result<Vec<SharedRun>, Error> {
    let redactor = Redactor::new();
    let display_url = redactor.register_url(url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the runtime", e))?;
    let rows = runtime.block_on(async {
        let mut connection = connect(url).await?;
        with_timeout(
            "listing runs",
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select r.run_id, r.script, r.mode, r.environment, {} as outcome, r.duration_ms, r.tag, r.initiator
                 from glow_runs r order by r.started_at desc limit $1",
                lock::OUTCOME_SQL
            )))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut connection),
        )
        .await
    });
    let rows = rows
        .map_err(|why| Error::host(format!("shared state {display_url}"), redactor.redact(&why)))?;
    Ok(rows
        .into_iter()
        .map(|row| SharedRun {
            run_id: row.get("run_id"),
            script: row.get("script"),
            mode: row.get("mode"),
            environment: row.get("environment"),
            outcome: row.get("outcome"),
            duration_ms: row.get("duration_ms"),
            tag: row.get("tag"),
            initiator: row.get("initiator"),
        })
        .collect())
}

/// This machine's name, recorded with the lock holder.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}
