//! `--state postgres://...`: a team's shared PostgreSQL for run history and the release lock.
//!
//! A live run takes a session-level advisory lock keyed on (script, environment) before it
//! starts, so two people cannot release the same thing at once; a dry run takes no lock. The
//! lock lives as long as the connection, so a killed run frees it. Each run is recorded in
//! `glow_runs` (started, then updated at `run_end`), which `glow-run runs --state URL` lists.
//! The environment is `--var env=` (or `--var environment=`), else "default".

use crate::config::{Mode, RunSettings, sha256_hex};
use crate::error::Error;
use crate::journal::Sink;
use crate::redact::Redactor;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
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

/// The shared state of one run: its connection holds the release lock until the run ends.
pub struct SharedState {
    connection: Mutex<Option<PgConnection>>,
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
    with_timeout("commit", tx.commit()).await?;
    Ok(connection)
}

impl SharedState {
    /// Connects, takes the release lock for a live run and records the run as started.
    pub fn open(
        url: &str,
        settings: &RunSettings,
        run_id: &str,
        initiator: &str,
        runtime: &tokio::runtime::Handle,
        redactor: &Redactor,
    ) -> Result<Arc<Self>, Error> {
        let display_url = redactor.register_url(url);
        let context = format!("shared state {display_url}");
        let script = settings.source_name.trim_start_matches("./").to_owned();
        let environment = environment(settings);
        let key = lock_key(&script, &environment);
        let live = settings.mode == Mode::Live;
        let connection = runtime.block_on(async {
            let mut connection = connect(url).await?;
            if live {
                let locked: bool = with_timeout(
                    "taking the release lock",
                    sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(key).fetch_one(&mut connection),
                )
                .await?;
                if !locked {
                    let holder = with_timeout(
                        "finding the lock holder",
                        sqlx::query(
                            "select run_id, coalesce(initiator, '?') as initiator, started_at::text as started
                             from glow_runs where lock_key = $1 and outcome = 'running'
                             order by started_at desc limit 1",
                        )
                        .bind(key)
                        .fetch_optional(&mut connection),
                    )
                    .await?;
                    let by = holder.map_or_else(
                        || "another live run".to_owned(),
                        |row| {
                            format!(
                                "run {} (started {} by {})",
                                row.get::<String, _>("run_id"),
                                row.get::<String, _>("started"),
                                row.get::<String, _>("initiator")
                            )
                        },
                    );
                    return Err(format!(
                        "the release lock for {script} (environment {environment}) is held by {by}; \
                         wait for it to finish (a dry run needs no lock)"
                    ));
                }
            }
            with_timeout(
                "recording the run",
                sqlx::query(
                    "insert into glow_runs (run_id, script, sha256, mode, environment, tag, initiator, lock_key)
                     values ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(run_id)
                .bind(&script)
                .bind(&settings.sha256)
                .bind(settings.mode.as_str())
                .bind(&environment)
                .bind(settings.vars.get("tag"))
                .bind(initiator)
                .bind(live.then_some(key))
                .execute(&mut connection),
            )
            .await?;
            Ok(connection)
        });
        let connection = connection.map_err(|why| Error::host(&context, redactor.redact(&why)))?;
        Ok(Arc::new(Self {
            connection: Mutex::new(Some(connection)),
            runtime: runtime.clone(),
            run_id: run_id.to_owned(),
            display_url,
        }))
    }

    fn record_end(&self, end: &crate::event::RunEnd) -> Result<(), String> {
        let Some(mut connection) = self
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
            sqlx::query(
                "select run_id, script, mode, environment, outcome, duration_ms, tag, initiator
                 from glow_runs order by started_at desc limit $1",
            )
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
