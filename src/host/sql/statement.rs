//! Statements: `query`, `query_one` and `execute` through the gate, parameters bound
//! positionally, and errors that show the statement with a caret where the server points.

use super::value::Param;
use super::*;
use crate::host::{Effect, HostContext};
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Map};
use serde_json::json;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor};

/// Statement text kept in targets and errors.
pub(super) const EXCERPT: usize = 240;

pub(super) fn params_of(what: &str, params: &Array) -> HostResult<Vec<Param>> {
    params
        .iter()
        .enumerate()
        .map(|(i, value)| {
            Param::from_dynamic(i + 1, value).map_err(|why| host_error(format!("{what}: {why}")))
        })
        .collect()
}

/// The statement on one line, cut to a readable length.
pub(super) fn excerpt(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= EXCERPT {
        return line;
    }
    let cut: String = line.chars().take(EXCERPT).collect();
    format!("{cut}...")
}

pub(super) fn statement_effect<'a>(
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
pub(super) fn refusal(action: &str, why: &str) -> String {
    format!(
        "sql::{action}: refused: {why}, and this session only reads (a dry run, or [sql] allow_writes = false: a read-only transaction); nothing was sent"
    )
}

/// Explains a failed statement: the server's message, the statement with a caret under the
/// position the server names, its detail and hint.
pub(super) fn statement_error(
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
pub(super) fn statement_with_caret(sql: &str, position: Option<usize>) -> String {
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
pub(super) fn fetch(
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

pub(super) fn query(
    ctx: &HostContext,
    db: &Database,
    sql: &str,
    params: Array,
) -> HostResult<Array> {
    let params = params_of("sql::query", &params)?;
    let effect = statement_effect(db, "query", sql, &params, true);
    ctx.perform(
        effect,
        || Ok(Array::new()),
        |event| {
            let rows = fetch(ctx, db, sql, params.clone())?
                .map_err(|e| statement_error(ctx, db, "sql::query", sql, &e))?;
            event.insert("rows".into(), json!(rows.len()));
            Ok(rows.into_iter().map(Dynamic::from_map).collect())
        },
    )
}

pub(super) fn query_one(
    ctx: &HostContext,
    db: &Database,
    sql: &str,
    params: Array,
) -> HostResult<Map> {
    let params = params_of("sql::query_one", &params)?;
    let effect = statement_effect(db, "query_one", sql, &params, true);
    ctx.perform(
        effect,
        || Ok(Map::new()),
        |event| {
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
        },
    )
}

pub(super) fn execute(
    ctx: &HostContext,
    db: &Database,
    sql: &str,
    params: Array,
) -> HostResult<i64> {
    let params = params_of("sql::execute", &params)?;
    let effect = statement_effect(db, "execute", sql, &params, false);
    ctx.perform(
        effect,
        || Ok(0),
        |event| {
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
                        if let Err(error) = sqlite_parameter_count(conn, &owned, params.len()).await
                        {
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
            Ok(i64::try_from(affected).unwrap_or(i64::MAX))
        },
    )
}

/// SQLite binds missing parameters as NULL and ignores extra ones; a wrong count is an error
/// here, as it is on PostgreSQL.
pub(super) async fn sqlite_parameter_count(
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
