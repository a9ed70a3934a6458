//! `sql`: PostgreSQL and SQLite through sqlx.
//!
//! `let db = sql::connect(url, opts?)` returns a `Database` with `query`, `query_one`,
//! `execute`, `transaction`, `migrate` and `pending`. Parameters are bound positionally (`$1`,
//! `?`), never spliced into the text.
//!
//! Why it is built the way it is:
//! - One connection per `Database`, so a transaction and session settings stay on it. Each
//!   operation moves the connection into the future it runs; when a timeout or a cancellation
//!   (Ctrl-C, step timeout, reload) drops that future the connection goes with it and the next
//!   call reconnects. On PostgreSQL the server keeps running a statement whose client went away,
//!   so the host also asks the server to stop it (`pg_cancel_backend` from a short-lived second
//!   connection); `statement_timeout` is set at connect as well. On SQLite a progress handler
//!   interrupts a statement past its deadline.
//! - Dry runs (and `[sql] allow_writes = false`) open a read-only session: PostgreSQL with
//!   `default_transaction_read_only` and each query inside `BEGIN READ ONLY ... ROLLBACK`, SQLite
//!   in read-only mode (a missing SQLite file is not created: the dry run reads an empty
//!   in-memory database instead). A write slipped into `query` fails instead of happening.
//! - `query`/`query_one` are read effects; `execute`, `transaction` and `migrate` are writes:
//!   planned in a dry run and refused by policy before anything is sent.
//! - The password in a URL is registered as a secret before anything is journaled; targets
//!   show the URL without it.

mod classify;
mod migrate;
mod read_only;
mod value;

use super::{DEFAULT_SQL_TIMEOUT, Effect, HostContext, Need, Outcome, install, map_of};
use crate::options::{HostResult, Options, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Engine, FnPtr, Map, Module, NativeCallContext};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use value::Param;

/// Extra time the client waits past the statement timeout, so the server's own timeout error
/// (with its message) arrives first; past it the client gives up and cancels.
const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// How long cancelling a statement on the server may take.
const CANCEL_BUDGET: Duration = Duration::from_secs(3);
/// Statement text kept in targets and errors.
const EXCERPT: usize = 240;

/// A database handle in a script. Cloning shares the connection.
#[derive(Clone)]
pub struct Database {
    session: Rc<Session>,
    /// A handle given to a `transaction` closure in a dry run, where the transaction is planned.
    planned_transaction: bool,
}

enum Target {
    Postgres(Box<PgConnectOptions>),
    Sqlite(Box<SqliteConnectOptions>),
    /// A dry run without a URL (its environment variable is missing): nothing to read, every
    /// read returns nothing and every write is planned, so the rest of the plan still appears.
    Offline,
}

enum Live {
    Postgres { conn: PgConnection, pid: i32 },
    Sqlite(SqliteConnection),
}

struct Session {
    target: Target,
    /// The URL without its password: what the journal and errors show.
    display: String,
    timeout: Duration,
    read_only: bool,
    live: RefCell<Option<Live>>,
    /// Open transactions and savepoints.
    depth: Cell<usize>,
    /// The connection was dropped (timeout, cancel) while a transaction was open.
    lost_in_transaction: Cell<bool>,
    /// SQLite: the deadline the progress handler enforces.
    deadline: Arc<Mutex<Option<Instant>>>,
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    engine.register_type_with_name::<Database>("Database");
    engine.register_fn("to_string", |db: &mut Database| {
        format!("Database({})", db.session.display)
    });
    engine.register_fn("to_debug", |db: &mut Database| {
        format!("Database({})", db.session.display)
    });
    let mut module = Module::new();

    let docs_connect = "Connects to a `postgres://` or `sqlite:` URL and returns a Database with `query`, `query_one`,\n\
                        `execute`, `transaction`, `migrate` and `pending`. Options: `timeout` (statement timeout, default 60s).\n\
                        The password in the URL is redacted everywhere.";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "connect",
        &["url: String", "Database"],
        docs_connect,
        false,
        move |url: &str| connect(&c, url, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "connect",
        &["url: String", "options: Map", "Database"],
        docs_connect,
        false,
        move |url: &str, options: Map| connect(&c, url, options),
    );

    let docs_query = "Runs a statement and returns its rows as an array of maps. Parameters bind positionally ($1 / ?).\n\
                      A read: it runs in a dry run, inside a read-only transaction.";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "query",
        &["db: Database", "sql: String", "Array"],
        docs_query,
        true,
        move |db: &mut Database, sql: &str| query(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "query",
        &["db: Database", "sql: String", "params: Array", "Array"],
        docs_query,
        true,
        move |db: &mut Database, sql: &str, params: Array| query(&c, db, sql, params),
    );

    let docs_one = "Like `query`, but returns the single row as a map; an error unless exactly one row comes back.";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "query_one",
        &["db: Database", "sql: String", "Map"],
        docs_one,
        true,
        move |db: &mut Database, sql: &str| query_one(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "query_one",
        &["db: Database", "sql: String", "params: Array", "Map"],
        docs_one,
        true,
        move |db: &mut Database, sql: &str, params: Array| query_one(&c, db, sql, params),
    );

    let docs_execute = "Runs a statement that changes the database and returns the number of rows affected.\n\
                        Planned in a dry run; refused when policy sets `[sql] allow_writes = false`.\n\
                        Without parameters the text may hold several statements.";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "execute",
        &["db: Database", "sql: String", "int"],
        docs_execute,
        true,
        move |db: &mut Database, sql: &str| execute(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "execute",
        &["db: Database", "sql: String", "params: Array", "int"],
        docs_execute,
        true,
        move |db: &mut Database, sql: &str, params: Array| execute(&c, db, sql, params),
    );

    let c = ctx.clone();
    add_fn(
        &mut module,
        "transaction",
        &["db: Database", "body: FnPtr", "Dynamic"],
        "Runs `body(tx)` in a transaction: commits when it returns, rolls back when it throws, and returns its value.\n\
         `tx` has the same methods as the database. Nested calls use savepoints. In a dry run the body runs with\n\
         its writes planned.",
        true,
        move |context: NativeCallContext, db: &mut Database, body: FnPtr| {
            transaction(&c, &context, db, &body)
        },
    );

    let c = ctx.clone();
    add_fn(
        &mut module,
        "migrate",
        &["db: Database", "dir: String", "Map"],
        "Applies the `*.sql` files of `dir` not yet applied, in file-name order, each in its own transaction,\n\
         recording name, SHA-256, time and run id in `glow_migrations`. An applied file whose checksum changed\n\
         is an error naming it. Returns `#{ applied: [#{ name, sha256 }], hash, planned }`; `hash` is the\n\
         SHA-256 over every file's name and checksum in order (the migration hash).",
        true,
        move |db: &mut Database, dir: &str| migrate::migrate(&c, db, dir),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "pending",
        &["db: Database", "dir: String", "Array"],
        "The migrations of `dir` not yet applied, in order: `[#{ name, sha256 }]`.",
        true,
        move |db: &mut Database, dir: &str| migrate::pending(&c, db, dir),
    );
    install(engine, "sql", module);
}

/// Like `host::add_fn`, but methods of `Database` go in the global namespace so that
/// `db.query(..)` finds them.
fn add_fn<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    module: &mut Module,
    name: &str,
    params: &[&str],
    docs: &str,
    method: bool,
    func: FUNC,
) where
    R: std::any::Any + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
{
    if !method {
        return super::add_fn(module, name, params, docs, func);
    }
    let comments: Vec<String> = docs
        .lines()
        .map(|line| format!("/// {line}").trim_end().to_owned())
        .collect();
    rhai::FuncRegistration::new(name)
        .in_global_namespace()
        .with_volatility(true)
        .with_params_info(params)
        .with_comments([comments.join("\n")])
        .set_into_module(module, func);
}

// ---------------------------------------------------------------------------------------------
// connect

fn connect(ctx: &HostContext, url: &str, options: Map) -> HostResult<Database> {
    let mut options = Options::new("sql::connect", options);
    let timeout = options.duration("timeout")?.unwrap_or(DEFAULT_SQL_TIMEOUT);
    options.finish()?;
    read_only::check_timeout(timeout)?;
    if timeout.is_zero() {
        return Err(host_error(
            "sql::connect: option 'timeout' must be more than zero",
        ));
    }
    // Before anything can be journaled: the password becomes a secret.
    let display = ctx.redactor.register_url(url);
    let read_only = !ctx.would_perform(&Subject::SqlWrite);
    let target = target(ctx, url, &display, timeout, read_only)?;
    let session = Rc::new(Session {
        target,
        display: display.clone(),
        timeout,
        read_only,
        live: RefCell::new(None),
        depth: Cell::new(0),
        lost_in_transaction: Cell::new(false),
        deadline: Arc::new(Mutex::new(None)),
    });
    let effect = Effect {
        namespace: "sql",
        action: "connect",
        target: display,
        detail: json!({ "engine": session.engine(), "timeout_ms": timeout.as_millis() as u64, "read_only": read_only }),
        read_only: true,
        subject: Subject::None,
    };
    ctx.effect(effect, |_event| {
        if matches!(session.target, Target::Offline) {
            return Ok(());
        }
        let live = session.connect(ctx)?;
        *session.live.borrow_mut() = Some(live);
        Ok(())
    })?;
    Ok(Database {
        session,
        planned_transaction: false,
    })
}

fn target(
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
    fn engine(&self) -> &'static str {
        match self.target {
            Target::Postgres(_) => "postgres",
            Target::Sqlite(_) => "sqlite",
            Target::Offline => "none",
        }
    }

    /// Opens a connection (bounded by the timeout, cancellable).
    fn connect(&self, ctx: &HostContext) -> HostResult<Live> {
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
        match ctx.block_on(within(self.timeout, future))? {
            Ok(Ok(live)) => Ok(live),
            Ok(Err(error)) => Err(failed(connect_error_text(&error))),
            Err(_) => Err(failed(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// Takes the connection out for one operation, reconnecting when an earlier one was lost.
    fn take(&self, ctx: &HostContext) -> HostResult<Live> {
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
    fn run<T, F, Fut>(&self, ctx: &HostContext, op: F) -> HostResult<Result<T, sqlx::Error>>
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
        let outcome = ctx.block_on(within(self.timeout + CLIENT_GRACE, op(live)));
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

    fn arm(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// The connection went down with a dropped future: stop its statement on the server.
    fn lost(&self, ctx: &HostContext, pid: Option<i32>) {
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
        // Not through `ctx.block_on`: the run may already be cancelled, and this must still happen.
        let _ = ctx.runtime.block_on(within(CANCEL_BUDGET, cancel));
    }
}

/// `tokio::time::timeout`, created inside the future: a timer needs the runtime, and the engine
/// thread only enters it in `block_on`.
async fn within<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, future).await
}

/// A connection error without sqlx's prefixes.
fn connect_error_text(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// statements

fn params_of(what: &str, params: &Array) -> HostResult<Vec<Param>> {
    params
        .iter()
        .enumerate()
        .map(|(i, value)| {
            Param::from_dynamic(i + 1, value).map_err(|why| host_error(format!("{what}: {why}")))
        })
        .collect()
}

/// The statement on one line, cut to a readable length.
fn excerpt(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= EXCERPT {
        return line;
    }
    let cut: String = line.chars().take(EXCERPT).collect();
    format!("{cut}...")
}

fn statement_effect<'a>(
    db: &Database,
    action: &'a str,
    sql: &str,
    params: &[Param],
    read_only: bool,
) -> Effect<'a> {
    Effect {
        namespace: "sql",
        action,
        target: excerpt(sql),
        detail: json!({
            "database": db.session.display,
            "params": params.iter().map(Param::evidence).collect::<Vec<_>>(),
        }),
        read_only,
        subject: match (read_only, db.session.read_only) {
            (false, _) => Subject::SqlWrite,
            (true, false) => Subject::None,
            (true, true) => classify::check_read(db.session.engine(), sql).map_or_else(
                |why| Subject::Refused(refusal(action, &why)),
                |()| Subject::None,
            ),
        },
    }
}

/// Why a read-only session refused a statement: the rule, and that nothing was sent.
fn refusal(action: &str, why: &str) -> String {
    format!(
        "sql::{action}: refused: {why}, and this session only reads (a dry run, or [sql] allow_writes = false: a read-only transaction); nothing was sent"
    )
}

/// Explains a failed statement: the server's message, the statement with a caret under the
/// position the server names, its detail and hint.
fn statement_error(
    ctx: &HostContext,
    db: &Database,
    what: &str,
    sql: &str,
    error: &sqlx::Error,
) -> Box<rhai::EvalAltResult> {
    let session = &db.session;
    let mut message = format!("{what} failed on {}: ", session.display);
    let mut caret = None;
    match error {
        sqlx::Error::Database(db_error) => {
            let code = db_error.code().map(|c| c.into_owned()).unwrap_or_default();
            let timed_out = match session.target {
                Target::Postgres(_) => {
                    code == "57014" && db_error.message().contains("statement timeout")
                }
                // SQLITE_INTERRUPT: the progress handler stopped a statement past its deadline.
                Target::Sqlite(_) => code == "9",
                Target::Offline => false,
            };
            if timed_out {
                message.push_str(&format!(
                    "timed out after {} (the statement timeout; raise it with sql::connect(url, #{{ timeout: \"5m\" }}))",
                    humantime::format_duration(session.timeout)
                ));
            } else {
                message.push_str(db_error.message());
                match session.target {
                    Target::Postgres(_) if !code.is_empty() => {
                        message.push_str(&format!(" (SQLSTATE {code})"))
                    }
                    Target::Sqlite(_) if !code.is_empty() => {
                        message.push_str(&format!(" (SQLite error {code})"))
                    }
                    _ => {}
                }
            }
            if let Some(pg) = db_error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(sqlx::postgres::PgErrorPosition::Original(position)) = pg.position() {
                    caret = Some(position);
                }
                if let Some(detail) = pg.detail() {
                    message.push_str(&format!("\n  detail: {detail}"));
                }
                if let Some(hint) = pg.hint() {
                    message.push_str(&format!("\n  hint: {hint}"));
                }
            }
        }
        sqlx::Error::Decode(why) => message.push_str(&why.to_string()),
        sqlx::Error::Protocol(why) => message.push_str(why),
        other => message.push_str(&other.to_string()),
    }
    message.push_str(&statement_with_caret(sql, caret));
    host_error(ctx.redact(&message))
}

/// `\n  statement: <excerpt>` and, when the server gave a 1-based character position, a caret
/// line under it (the excerpt is then a window of the statement around that position).
fn statement_with_caret(sql: &str, position: Option<usize>) -> String {
    const LABEL: &str = "  statement: ";
    let Some(position) = position else {
        return format!("\n{LABEL}{}", excerpt(sql));
    };
    let chars: Vec<char> = sql
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let at = position.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(EXCERPT / 2);
    let end = (start + EXCERPT).min(chars.len());
    let prefix = if start > 0 { "..." } else { "" };
    let window: String = chars[start..end].iter().collect();
    let suffix = if end < chars.len() { "..." } else { "" };
    let pad = LABEL.len() + prefix.len() + (at - start);
    format!("\n{LABEL}{prefix}{window}{suffix}\n{}^", " ".repeat(pad))
}

/// Runs `sql` and returns its rows. In a read-only PostgreSQL session (outside an open
/// transaction) the statement runs inside `BEGIN READ ONLY ... ROLLBACK`.
fn fetch(
    ctx: &HostContext,
    db: &Database,
    sql: &str,
    params: Vec<Param>,
) -> HostResult<Result<Vec<Map>, sqlx::Error>> {
    let session = &db.session;
    if matches!(session.target, Target::Offline) {
        return Ok(Ok(Vec::new()));
    }
    let wrap = session.read_only && session.depth.get() == 0;
    let sql = sql.to_owned();
    session.run(ctx, move |mut live| async move {
        let result = async {
            match &mut live {
                Live::Postgres { conn, .. } => {
                    if wrap {
                        conn.execute(sqlx::raw_sql("begin read only")).await?;
                    }
                    let mut query = sqlx::query(AssertSqlSafe(sql));
                    for param in &params {
                        query = value::bind_pg(query, param);
                    }
                    let rows = query.fetch_all(&mut *conn).await;
                    if wrap {
                        conn.execute(sqlx::raw_sql("rollback")).await?;
                    }
                    rows?
                        .iter()
                        .map(|row| {
                            value::pg_row(row).map_err(|why| sqlx::Error::Decode(why.into()))
                        })
                        .collect()
                }
                Live::Sqlite(conn) => {
                    sqlite_parameter_count(conn, &sql, params.len()).await?;
                    let mut query = sqlx::query(AssertSqlSafe(sql));
                    for param in &params {
                        query = value::bind_sqlite(query, param);
                    }
                    let rows = query.fetch_all(&mut *conn).await?;
                    rows.iter()
                        .map(|row| {
                            value::sqlite_row(row).map_err(|why| sqlx::Error::Decode(why.into()))
                        })
                        .collect()
                }
            }
        }
        .await;
        (live, result)
    })
}

fn query(ctx: &HostContext, db: &Database, sql: &str, params: Array) -> HostResult<Array> {
    let params = params_of("sql::query", &params)?;
    let effect = statement_effect(db, "query", sql, &params, true);
    let outcome = ctx.effect(effect, |event| {
        let rows = fetch(ctx, db, sql, params.clone())?
            .map_err(|e| statement_error(ctx, db, "sql::query", sql, &e))?;
        event.insert("rows".into(), json!(rows.len()));
        Ok(rows)
    })?;
    match outcome {
        Outcome::Done(rows) => Ok(rows.into_iter().map(Dynamic::from_map).collect()),
        Outcome::Planned => Ok(Array::new()),
    }
}

fn query_one(ctx: &HostContext, db: &Database, sql: &str, params: Array) -> HostResult<Map> {
    let params = params_of("sql::query_one", &params)?;
    let effect = statement_effect(db, "query_one", sql, &params, true);
    let outcome = ctx.effect(effect, |event| {
        let mut rows = fetch(ctx, db, sql, params.clone())?
            .map_err(|e| statement_error(ctx, db, "sql::query_one", sql, &e))?;
        event.insert("rows".into(), json!(rows.len()));
        if matches!(db.session.target, Target::Offline) {
            return Ok(Map::new());
        }
        if rows.len() != 1 {
            return Err(host_error(ctx.redact(&format!(
                "sql::query_one expected exactly one row, got {}\n  statement: {}",
                rows.len(),
                excerpt(sql)
            ))));
        }
        Ok(rows.remove(0))
    })?;
    match outcome {
        Outcome::Done(row) => Ok(row),
        Outcome::Planned => Ok(Map::new()),
    }
}

fn execute(ctx: &HostContext, db: &Database, sql: &str, params: Array) -> HostResult<i64> {
    let params = params_of("sql::execute", &params)?;
    let effect = statement_effect(db, "execute", sql, &params, false);
    let outcome = ctx.effect(effect, |event| {
        if db.planned_transaction {
            // Unreachable in practice: a planned transaction only exists in a dry run, where the
            // gate plans this statement. Kept so a write can never run on a read-only path.
            return Err(host_error(
                "sql::execute: cannot write inside a planned transaction",
            ));
        }
        let owned = sql.to_owned();
        let result = db.session.run(ctx, move |mut live| async move {
            let result = match &mut live {
                Live::Postgres { conn, .. } if params.is_empty() => conn
                    .execute(sqlx::raw_sql(AssertSqlSafe(owned)))
                    .await
                    .map(|r| r.rows_affected()),
                Live::Postgres { conn, .. } => {
                    let mut query = sqlx::query(AssertSqlSafe(owned));
                    for param in &params {
                        query = value::bind_pg(query, param);
                    }
                    query.execute(&mut *conn).await.map(|r| r.rows_affected())
                }
                Live::Sqlite(conn) if params.is_empty() => conn
                    .execute(sqlx::raw_sql(AssertSqlSafe(owned)))
                    .await
                    .map(|r| r.rows_affected()),
                Live::Sqlite(conn) => {
                    if let Err(error) = sqlite_parameter_count(conn, &owned, params.len()).await {
                        return (live, Err(error));
                    }
                    let mut query = sqlx::query(AssertSqlSafe(owned));
                    for param in &params {
                        query = value::bind_sqlite(query, param);
                    }
                    query.execute(&mut *conn).await.map(|r| r.rows_affected())
                }
            };
            (live, result)
        })?;
        let affected = result.map_err(|e| statement_error(ctx, db, "sql::execute", sql, &e))?;
        event.insert("rows_affected".into(), json!(affected));
        Ok(affected)
    })?;
    match outcome {
        Outcome::Done(n) => Ok(i64::try_from(n).unwrap_or(i64::MAX)),
        Outcome::Planned => Ok(0),
    }
}

/// SQLite binds missing parameters as NULL and ignores extra ones; a wrong count is an error
/// here, as it is on PostgreSQL.
async fn sqlite_parameter_count(
    conn: &mut SqliteConnection,
    sql: &str,
    given: usize,
) -> Result<(), sqlx::Error> {
    use sqlx::Statement;
    let statement = (&mut *conn)
        .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
            sql.to_owned(),
        )))
        .await?;
    match statement.parameters() {
        Some(sqlx::Either::Right(expected)) if expected != given => {
            Err(sqlx::Error::Protocol(format!(
                "the statement has {expected} parameter{} but {given} {} given",
                if expected == 1 { "" } else { "s" },
                if given == 1 { "was" } else { "were" }
            )))
        }
        _ => Ok(()),
    }
}

/// Runs a control statement (`begin`, `commit`, `savepoint ...`) on the connection.
fn control(ctx: &HostContext, db: &Database, sql: &'static str) -> HostResult<()> {
    let result = db.session.run(ctx, move |mut live| async move {
        let result = match &mut live {
            Live::Postgres { conn, .. } => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
            Live::Sqlite(conn) => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
        };
        (live, result)
    })?;
    result.map_err(|e| statement_error(ctx, db, "sql::transaction", sql, &e))
}

/// Best effort, bounded, and not cancellable: used to roll back after a failure or a cancel.
fn rollback_quietly(ctx: &HostContext, db: &Database, sql: &'static str) {
    let Some(mut live) = db.session.live.borrow_mut().take() else {
        return;
    };
    let future = async {
        match &mut live {
            Live::Postgres { conn, .. } => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
            Live::Sqlite(conn) => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
        }
    };
    if let Ok(Ok(())) = ctx.runtime.block_on(within(CANCEL_BUDGET, future)) {
        *db.session.live.borrow_mut() = Some(live);
    }
}

fn transaction(
    ctx: &HostContext,
    context: &NativeCallContext,
    db: &Database,
    body: &FnPtr,
) -> HostResult<Dynamic> {
    let session = &db.session;
    let effect = Effect {
        namespace: "sql",
        action: "transaction",
        target: session.display.clone(),
        detail: json!({ "depth": session.depth.get() }),
        read_only: false,
        subject: Subject::SqlWrite,
    };
    let outcome = ctx.effect(effect, |event| {
        let depth = session.depth.get();
        let (begin, commit, rollback): (&'static str, &'static str, &'static str) = if depth == 0 {
            ("begin", "commit", "rollback")
        } else {
            // One savepoint name per depth: a nested transaction at depth N only ever sees its own.
            const NAMES: [(&str, &str, &str); 4] = [
                (
                    "savepoint glow_1",
                    "release savepoint glow_1",
                    "rollback to savepoint glow_1; release savepoint glow_1",
                ),
                (
                    "savepoint glow_2",
                    "release savepoint glow_2",
                    "rollback to savepoint glow_2; release savepoint glow_2",
                ),
                (
                    "savepoint glow_3",
                    "release savepoint glow_3",
                    "rollback to savepoint glow_3; release savepoint glow_3",
                ),
                (
                    "savepoint glow_4",
                    "release savepoint glow_4",
                    "rollback to savepoint glow_4; release savepoint glow_4",
                ),
            ];
            *NAMES
                .get(depth - 1)
                .ok_or_else(|| host_error("sql::transaction: nested more than 5 deep"))?
        };
        control(ctx, db, begin)?;
        session.depth.set(depth + 1);
        let tx = Database {
            session: session.clone(),
            planned_transaction: false,
        };
        let result = body.call_within_context::<Dynamic>(context, (tx,));
        let ended = match &result {
            Ok(_) if !session.lost_in_transaction.get() => {
                control(ctx, db, commit).map(|()| "committed")
            }
            _ => {
                rollback_quietly(ctx, db, rollback);
                Ok("rolled back")
            }
        };
        session.depth.set(depth);
        if depth == 0 {
            session.lost_in_transaction.set(false);
        }
        event.insert("outcome_detail".into(), json!(ended.as_ref().ok()));
        let value = result?;
        ended?;
        Ok(value)
    })?;
    match outcome {
        Outcome::Done(value) => Ok(value),
        // A dry run: the body still runs so its reads happen and its writes are planned.
        Outcome::Planned => {
            let tx = Database {
                session: session.clone(),
                planned_transaction: true,
            };
            body.call_within_context::<Dynamic>(context, (tx,))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_the_position() {
        let text = statement_with_caret("selec 1\nfrom t", Some(1));
        assert_eq!(text, "\n  statement: selec 1 from t\n             ^");
        let text = statement_with_caret("select 1 frm t", Some(10));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2].len() - 1, lines[1].find("frm").unwrap());
    }

    #[test]
    fn excerpt_collapses_whitespace() {
        assert_eq!(excerpt("select\n  1,\n  2"), "select 1, 2");
        assert!(excerpt(&"x ".repeat(500)).ends_with("..."));
    }
}
