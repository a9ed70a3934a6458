//! Which statements a read-only session (every dry run, and `[sql] allow_writes = false') may
//! send. PostgreSQL's `READ ONLY` transaction and SQLite's read-only mode stop table writes,
//! but not everything with an effect: `copy ... to program` runs a program on the server,
//! `pg_advisory_lock`, `pg_reload_conf`, `pg_switch_wal`, `pg_create_restore_point` and
//! `pg_stat_reset` act on the server, and SQLite's `vacuum into 'copy.db'` writes a full copy.
//! So each statement is parsed (the `sqlparser` crate, with the PostgreSQL or SQLite dialect)
//! and only what is shown to be a read passes: `SELECT`/`VALUES`/`TABLE` queries (no data-
//! modifying CTE, no `SELECT INTO`, no `FOR UPDATE`), `EXPLAIN` without `ANALYZE` of such a
//! query, `SHOW`, and SQLite's reading pragmas; and no call to a function on the deny list. A
//! statement that does not parse is refused too: a read-only session sends only what it can
//! prove is a read. User-defined functions are beyond what can be seen from the text; the
//! server's read-only transaction still stops their table writes.

use sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Functions with effects beyond the transaction, refused by exact name.
const DENIED_FUNCTIONS: &[&str] = &[
    "pg_reload_conf",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_rotate_logfile",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_promote",
    "pg_notify",
    "pg_logical_emit_message",
    "pg_log_backend_memory_contexts",
    "pg_file_write",
    "pg_export_snapshot",
    "set_config",
    "nextval",
    "setval",
    "txid_current",
    "load_extension",
    "writefile",
    "edit",
];

/// Families of such functions, refused by prefix.
const DENIED_PREFIXES: &[&str] = &[
    "pg_advisory",
    "pg_try_advisory",
    "pg_stat_reset",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_wal_replay_",
    "lo_",
    "dblink",
];

/// SQLite pragmas that only report (without `= value`).
const READING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "database_list",
    "collation_list",
    "function_list",
    "compile_options",
    "integrity_check",
    "quick_check",
    "user_version",
    "schema_version",
    "application_id",
    "page_count",
    "page_size",
    "freelist_count",
    "encoding",
    "journal_mode",
    "foreign_keys",
    "data_version",
];

/// `Ok` when every statement of `sql` is a read for `engine` ("postgres", "sqlite", "none");
/// otherwise the reason, naming the statement or function.
pub fn check_read(engine: &str, sql: &str) -> Result<(), String> {
    let dialect: &dyn Dialect = if engine == "sqlite" {
        &SQLiteDialect {}
    } else {
        &PostgreSqlDialect {}
    };
    if engine == "sqlite"
        && let Some(verdict) = pragma(sql)
    {
        return verdict;
    }
    let statements = Parser::parse_sql(dialect, sql).map_err(|e| {
        format!(
            "{} cannot be parsed to show it is a read ({e})",
            keyword_of(sql)
        )
    })?;
    if statements.is_empty() {
        return Err("there is no statement".into());
    }
    for statement in &statements {
        if let ControlFlow::Break(why) = statement.visit(&mut ReadOnly) {
            return Err(why);
        }
    }
    Ok(())
}

/// A lone SQLite pragma, read by hand: the parser wants a literal where SQLite takes a name
/// (`pragma table_info(t)`). `None` when `sql` is not a pragma.
fn pragma(sql: &str) -> Option<Result<(), String>> {
    let text = sql.trim().trim_end_matches(';').trim();
    let rest = text
        .get(..6)
        .filter(|head| head.eq_ignore_ascii_case("pragma"))
        .map(|_| text[6..].trim_start())?;
    let taken: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        .collect();
    let name = taken.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    let after = rest[taken.len()..].trim_start();
    let reading = READING_PRAGMAS.contains(&name.as_str())
        && !text.contains(';')
        && (after.is_empty() || after.starts_with('('));
    Some(if reading {
        Ok(())
    } else {
        Err(format!(
            "PRAGMA {name} is not a reading pragma (only a reading pragma without `=` is)"
        ))
    })
}

struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        match statement {
            Statement::Query(_) => ControlFlow::Continue(()),
            Statement::Explain { analyze: true, .. } => {
                ControlFlow::Break("EXPLAIN ANALYZE runs the statement".into())
            }
            Statement::Explain { .. } => ControlFlow::Continue(()),
            Statement::Pragma { name, is_eq, .. } => {
                let name = name.to_string().to_ascii_lowercase();
                let name = name.rsplit('.').next().unwrap_or(&name).to_owned();
                if !is_eq && READING_PRAGMAS.contains(&name.as_str()) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!("PRAGMA {name} is not a reading pragma"))
                }
            }
            other => {
                let text = other.to_string();
                if text.to_ascii_uppercase().starts_with("SHOW ") {
                    return ControlFlow::Continue(());
                }
                ControlFlow::Break(format!("{} is not a read", keyword_of(&text)))
            }
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if !query.locks.is_empty() {
            return ControlFlow::Break("SELECT ... FOR UPDATE/SHARE takes row locks".into());
        }
        body_is_read(&query.body)
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let full = function.name.to_string().to_ascii_lowercase();
        let name = full.rsplit('.').next().unwrap_or(&full).trim_matches('"');
        let denied = DENIED_FUNCTIONS.contains(&name)
            || DENIED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if denied {
            return ControlFlow::Break(format!(
                "{name}() has effects outside the transaction (deny list)"
            ));
        }
        ControlFlow::Continue(())
    }
}

fn body_is_read(body: &SetExpr) -> ControlFlow<String> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => {
            ControlFlow::Break("SELECT ... INTO creates a table".into())
        }
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) | SetExpr::Query(_) => {
            ControlFlow::Continue(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            body_is_read(left)?;
            body_is_read(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            ControlFlow::Break("a data-modifying WITH query is not a read".into())
        }
    }
}

/// The statement's first words, upper case ("COPY", "VACUUM", "ALTER SYSTEM").
fn keyword_of(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let two = words.join(" ").to_ascii_uppercase();
    match two.as_str() {
        "ALTER SYSTEM" | "CREATE TABLE" | "DROP TABLE" => two,
        _ => words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass() {
        for sql in [
            "select 1",
            "select a, count(*) from t where b = $1 group by a order by 2 desc limit 5",
            "with x as (select 1 as v) select v from x union all select 2",
            "values (1), (2)",
            "select to_regclass('glow_migrations') is not null as present",
            "select '{\"a\":1}'::jsonb ->> 'a'",
            "explain select * from t",
            "show server_version",
        ] {
            assert_eq!(check_read("postgres", sql), Ok(()), "{sql}");
        }
        for sql in [
            "select count(*) > 0 as present from sqlite_master where type = 'table'",
            "pragma table_info(t)",
            "pragma journal_mode",
        ] {
            assert_eq!(check_read("sqlite", sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn effects_are_refused_with_the_rule() {
        for (sql, rule) in [
            ("copy (select 1) to program 'touch /tmp/x'", "COPY"),
            ("copy t to '/tmp/t.csv'", "COPY"),
            ("select pg_advisory_lock(1)", "pg_advisory_lock"),
            ("select pg_catalog.pg_reload_conf()", "pg_reload_conf"),
            ("select pg_switch_wal()", "pg_switch_wal"),
            (
                "select pg_create_restore_point('x')",
                "pg_create_restore_point",
            ),
            ("select pg_stat_reset()", "pg_stat_reset"),
            (
                "select * from (select pg_advisory_lock(2)) s",
                "pg_advisory_lock",
            ),
            (
                "with d as (delete from t returning *) select * from d",
                "data-modifying",
            ),
            ("select * into t2 from t", "INTO"),
            ("select * from t for update", "row locks"),
            ("insert into t values (1)", "INSERT"),
            ("explain analyze delete from t", "ANALYZE"),
            ("set default_transaction_read_only = off", "SET"),
            ("select set_config('a.b', 'c', false)", "set_config"),
            ("select 1; delete from t", "DELETE"),
            ("selec 1", "SELEC cannot be parsed"),
        ] {
            let why = check_read("postgres", sql).expect_err(sql);
            assert!(why.contains(rule), "{sql}: {why}");
        }
        for (sql, rule) in [
            ("vacuum into 'copy.db'", "VACUUM"),
            ("pragma journal_mode = wal", "journal_mode"),
            ("attach database 'x.db' as x", "ATTACH"),
            ("select load_extension('x')", "load_extension"),
        ] {
            let why = check_read("sqlite", sql).expect_err(sql);
            assert!(why.contains(rule), "{sql}: {why}");
        }
    }
}
