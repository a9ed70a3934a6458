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
mod session;
mod statement;
mod transaction;
mod value;

use session::*;
use statement::*;
use transaction::*;

use super::{DEFAULT_SQL_TIMEOUT, Effect, HostContext, install, map_of};
use crate::options::{HostResult, Options, host_error};
use crate::policy::Subject;
use rhai::{Array, Engine, FnPtr, Map, Module, NativeCallContext};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// A database handle in a script. Cloning shares the connection.
#[derive(Clone)]
pub struct Database {
    session: Rc<Session>,
    /// A handle given to a `transaction` closure in a dry run, where the transaction is planned.
    planned_transaction: bool,
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

    register_statements(&mut module, ctx);
    register_changes(&mut module, ctx);
    install(engine, "sql", module);
}

/// `query`, `query_one` and `execute` on a Database.
fn register_statements(module: &mut Module, ctx: &Rc<HostContext>) {
    let docs_query = "Runs a statement and returns its rows as an array of maps. Parameters bind positionally ($1 / ?).\n\
                      A read: it runs in a dry run, inside a read-only transaction.";
    let c = ctx.clone();
    add_fn(
        module,
        "query",
        &["db: Database", "sql: String", "Array"],
        docs_query,
        true,
        move |db: &mut Database, sql: &str| query(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
        "query",
        &["db: Database", "sql: String", "params: Array", "Array"],
        docs_query,
        true,
        move |db: &mut Database, sql: &str, params: Array| query(&c, db, sql, params),
    );

    let docs_one = "Like `query`, but returns the single row as a map; an error unless exactly one row comes back.";
    let c = ctx.clone();
    add_fn(
        module,
        "query_one",
        &["db: Database", "sql: String", "Map"],
        docs_one,
        true,
        move |db: &mut Database, sql: &str| query_one(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
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
        module,
        "execute",
        &["db: Database", "sql: String", "int"],
        docs_execute,
        true,
        move |db: &mut Database, sql: &str| execute(&c, db, sql, Array::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
        "execute",
        &["db: Database", "sql: String", "params: Array", "int"],
        docs_execute,
        true,
        move |db: &mut Database, sql: &str, params: Array| execute(&c, db, sql, params),
    );
}

/// `transaction`, `migrate` and `pending` on a Database.
fn register_changes(module: &mut Module, ctx: &Rc<HostContext>) {
    let c = ctx.clone();
    add_fn(
        module,
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
        module,
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
        module,
        "pending",
        &["db: Database", "dir: String", "Array"],
        "The migrations of `dir` not yet applied, in order: `[#{ name, sha256 }]`.",
        true,
        move |db: &mut Database, dir: &str| migrate::pending(&c, db, dir),
    );
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
    if method {
        super::add_method(module, name, params, docs, func);
    } else {
        super::add_fn(module, name, params, docs, func);
    }
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
    ctx.read(effect, |_event| {
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

// ---------------------------------------------------------------------------------------------
// statements

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
