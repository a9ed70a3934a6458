//! `db.transaction(|tx| ...)`: commits when the closure returns and rolls back when it throws
//! (nested calls use savepoints).

use super::*;
use crate::host::{Effect, HostContext};
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Dynamic, FnPtr, NativeCallContext};
use serde_json::json;
use sqlx::Executor;

/// Runs a control statement (`begin`, `commit`, `savepoint ...`) on the connection.
pub(super) fn control(ctx: &HostContext, db: &Database, sql: &'static str) -> HostResult<()> {
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
pub(super) fn rollback_quietly(ctx: &HostContext, db: &Database, sql: &'static str) {
    let Some(mut live) = db.session.live.borrow_mut().take() else {
        return;
    };
    let future = async {
        match &mut live {
            Live::Postgres { conn, .. } => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
            Live::Sqlite(conn) => conn.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
        }
    };
    let Ok(runtime) = ctx.local_runtime() else {
        return;
    };
    if let Ok(Ok(())) = runtime.block_on(within(CANCEL_BUDGET, future)) {
        *db.session.live.borrow_mut() = Some(live);
    }
}

pub(super) fn transaction(
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
    // A dry run: the body still runs so its reads happen and its writes are planned.
    let planned = || {
        let tx = Database {
            session: session.clone(),
            planned_transaction: true,
        };
        body.call_within_context::<Dynamic>(context, (tx,))
    };
    ctx.perform(effect, planned, |event| {
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
    })
}
