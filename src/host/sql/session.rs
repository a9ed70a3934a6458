//! A `Database`'s session: the connection target (PostgreSQL, SQLite, or offline in a dry run
//! without a URL), the one live connection moved into each operation's future, its statement
//! timeout, and cancelling a statement on the server when its future is dropped.

use super::*;
use crate::host::{HostContext, Need};
use crate::options::{HostResult, host_error};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Extra time the client waits past the statement timeout, so the server's own timeout error
/// (with its message) arrives first; past it the client gives up and cancels.
pub(super) const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// How long cancelling a statement on the server may take.
pub(super) const CANCEL_BUDGET: Duration = Duration::from_secs(3);

pub(super) enum Target {
    Postgres(Box<PgConnectOptions>),
    Sqlite(Box<SqliteConnectOptions>),
    /// A dry run without a URL (its environment variable is missing): nothing to read, every
    /// read returns nothing and every write is planned, so the rest of the plan still appears.
    Offline,
}

pub(super) enum Live {
    Postgres { conn: PgConnection, pid: i32 },
    Sqlite(SqliteConnection),
}

pub(super) struct Session {
    pub(super) target: Target,
    /// The URL without its password: what the journal and errors show.
    pub(super) display: String,
    pub(super) timeout: Duration,
    pub(super) read_only: bool,
    pub(super) live: RefCell<Option<Live>>,
    /// Open transactions and savepoints.
    pub(super) depth: Cell<usize>,
    /// The connection was dropped (timeout, cancel) while a transaction was open.
    pub(super) lost_in_transaction: Cell<bool>,
    /// SQLite: the deadline the progress handler enforces.
    pub(super) deadline: Arc<Mutex<Option<Instant>>>,
}

pub(super) fn target(
    ctx: &HostContext,
    url: &str,
    display: &str,
    timeout: Duration,
    read_only: bool,
) -> HostResult<Target> {
    let invalid = |e: sqlx::Error| {
        host_error(ctx.redact(&format!("sql::connect: invalid URL {display}: {e}")))
    };
    if url.trim().is_empty() {
        ctx.missing(Need::Env, &[], || {
            host_error("sql::connect: the database URL is empty (is its environment variable set?)")
        })?;
        ctx.log(
            "warn",
            "sql::connect: no database URL; this dry run reads nothing from the database and plans its writes",
        );
        return Ok(Target::Offline);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)
            .map_err(invalid)?
            .application_name("glow-run")
            .disable_statement_logging();
        return Ok(Target::Postgres(Box::new(options)));
    }
    if url.starts_with("sqlite:") {
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(invalid)?
            .busy_timeout(timeout)
            .read_only(read_only)
            .create_if_missing(!read_only)
            .disable_statement_logging();
        if read_only {
            options = read_only::sqlite(options);
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if read_only && !in_memory && !options.get_filename().exists() {
            // A dry run never creates the file: it reads an empty database instead, so the
            // plan still lists every migration as pending.
            ctx.log(
                "warn",
                &format!(
                    "sql::connect: {} does not exist yet; this dry run reads an empty in-memory database",
                    options.get_filename().display()
                ),
            );
            options = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(invalid)?
                .read_only(true);
        }
        return Ok(Target::Sqlite(Box::new(options)));
    }
    Err(host_error(format!(
        "sql::connect: unsupported URL {display}: expected postgres://... or sqlite:..."
    )))
}

impl Session {
    pub(super) fn engine(&self) -> &'static str {
        match self.target {
            Target::Postgres(_) => "postgres",
            Target::Sqlite(_) => "sqlite",
            Target::Offline => "none",
        }
    }

    /// Opens a connection (bounded by the timeout, cancellable).
    pub(super) fn connect(&self, ctx: &HostContext) -> HostResult<Live> {
        let future = async {
            match &self.target {
                Target::Postgres(options) => {
                    let mut conn = PgConnection::connect_with(options).await?;
                    // Session settings as SQL rather than startup options: connection poolers
                    // (PgBouncer, Supavisor) refuse unknown startup parameters.
                    let mut setup = format!("set statement_timeout = {}", self.timeout.as_millis());
                    if self.read_only {
                        setup.push_str("; set default_transaction_read_only = on");
                    }
                    conn.execute(sqlx::raw_sql(AssertSqlSafe(setup))).await?;
                    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await?;
                    Ok(Live::Postgres { conn, pid })
                }
                Target::Sqlite(options) => {
                    let mut conn = SqliteConnection::connect_with(options).await?;
                    let deadline = self.deadline.clone();
                    conn.lock_handle()
                        .await?
                        .set_progress_handler(1000, move || {
                            let deadline = *deadline.lock().unwrap_or_else(|e| e.into_inner());
                            deadline.is_none_or(|at| Instant::now() < at)
                        });
                    Ok(Live::Sqlite(conn))
                }
                Target::Offline => Err(sqlx::Error::Configuration("no database URL".into())),
            }
        };
        let failed = |why: String| {
            host_error(ctx.redact(&format!(
                "sql::connect: cannot connect to {}: {why}",
                self.display
            )))
        };
        match ctx.block_on_local(within(self.timeout, future))? {
            Ok(Ok(live)) => Ok(live),
            Ok(Err(error)) => Err(failed(connect_error_text(&error))),
            Err(_) => Err(failed(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// Takes the connection out for one operation, reconnecting when an earlier one was lost.
    pub(super) fn take(&self, ctx: &HostContext) -> HostResult<Live> {
        if let Some(live) = self.live.borrow_mut().take() {
            return Ok(live);
        }
        if self.depth.get() > 0 && self.lost_in_transaction.get() {
            return Err(host_error(
                "sql: the connection was lost inside this transaction (timeout or cancel); the transaction was rolled back",
            ));
        }
        self.connect(ctx)
    }

    /// Runs one operation on the connection, bounded by the timeout and raced against
    /// cancellation. The connection travels with the future: if the future is dropped the
    /// connection is dropped too, and the statement is cancelled on the server.
    pub(super) fn run<T, F, Fut>(
        &self,
        ctx: &HostContext,
        op: F,
    ) -> HostResult<Result<T, sqlx::Error>>
    where
        F: FnOnce(Live) -> Fut,
        Fut: Future<Output = (Live, Result<T, sqlx::Error>)>,
    {
        let live = self.take(ctx)?;
        let pid = match &live {
            Live::Postgres { pid, .. } => Some(*pid),
            Live::Sqlite(_) => None,
        };
        self.arm(Some(Instant::now() + self.timeout));
        let outcome = ctx.block_on_local(within(self.timeout + CLIENT_GRACE, op(live)));
        match outcome {
            Ok(Ok((live, result))) => {
                self.arm(None);
                *self.live.borrow_mut() = Some(live);
                Ok(result)
            }
            Ok(Err(_elapsed)) => {
                self.lost(ctx, pid);
                Err(host_error(format!(
                    "sql: no answer from {} within {}; the statement was cancelled",
                    self.display,
                    humantime::format_duration(self.timeout)
                )))
            }
            Err(cancelled) => {
                self.lost(ctx, pid);
                Err(cancelled)
            }
        }
    }

    pub(super) fn arm(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// The connection went down with a dropped future: stop its statement on the server.
    pub(super) fn lost(&self, ctx: &HostContext, pid: Option<i32>) {
        self.arm(Some(Instant::now()));
        if self.depth.get() > 0 {
            self.lost_in_transaction.set(true);
        }
        let (Some(pid), Target::Postgres(options)) = (pid, &self.target) else {
            return;
        };
        let options = options.as_ref().clone();
        let cancel = async move {
            let mut conn = PgConnection::connect_with(&options).await?;
            sqlx::query("select pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        // Not through `ctx.block_on_local`: the run may already be cancelled, and this must
        // still happen.
        if let Ok(runtime) = ctx.local_runtime() {
            let _ = runtime.block_on(within(CANCEL_BUDGET, cancel));
        }
    }
}

/// `tokio::time::timeout`, created inside the future: a timer needs the runtime, and the engine
/// thread only enters it in `block_on`.
pub(super) async fn within<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, future).await
}

/// A connection error without sqlx's prefixes.
pub(super) fn connect_error_text(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
