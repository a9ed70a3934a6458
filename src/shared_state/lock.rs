//! The release lock: a session-level advisory lock keyed on (script, environment). Who holds it
//! is read from `pg_locks` (the truth: a killed run's session is gone, and its lock with it),
//! joined with the holder's `glow_runs` row (which records the session's backend pid) to name
//! the run, its initiator, host and pid. `--wait-lock` queues in PostgreSQL's own lock queue,
//! which grants waiters first come, first served.

use super::with_timeout;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::time::{Duration, Instant};

/// A lock holder as `pg_locks` and its run row describe it.
pub struct Holder {
    /// The holder's database session (`pg_backend_pid()`), what `unlock` terminates.
    pub session: i32,
    pub run_id: Option<String>,
    pub description: String,
}

/// The `pg_locks` columns of a bigint advisory lock key.
fn key_parts(key: i64) -> (i64, i64) {
    (key >> 32, key & 0xffff_ffff)
}

/// Who holds the lock `key` now, if anyone.
pub async fn holder(connection: &mut PgConnection, key: i64) -> Result<Option<Holder>, String> {
    let (high, low) = key_parts(key);
    let row = with_timeout(
        "finding the lock holder",
        sqlx::query(
            "select l.pid as session, r.run_id, r.initiator, r.host, r.pid as os_pid,
                    r.started_at::text as started, a.application_name, a.client_addr::text as client
             from pg_locks l
             left join pg_stat_activity a on a.pid = l.pid
             left join glow_runs r on r.backend_pid = l.pid and r.lock_key = $1 and r.outcome = 'running'
             where l.locktype = 'advisory' and l.granted and l.objsubid = 1
               and l.classid::bigint = $2 and l.objid::bigint = $3
             order by r.started_at desc nulls last limit 1",
        )
        .bind(key)
        .bind(high)
        .bind(low)
        .fetch_optional(&mut *connection),
    )
    .await?;
    Ok(row.map(|row| {
        let session: i32 = row.get("session");
        let run_id: Option<String> = row.get("run_id");
        let description = match &run_id {
            Some(run) => format!(
                "run {run} (started {} by {} on {}, pid {}; database session {session})",
                row.get::<Option<String>, _>("started").unwrap_or_default(),
                row.get::<Option<String>, _>("initiator")
                    .unwrap_or_else(|| "?".into()),
                row.get::<Option<String>, _>("host")
                    .unwrap_or_else(|| "?".into()),
                row.get::<Option<i32>, _>("os_pid")
                    .map_or_else(|| "?".into(), |p| p.to_string()),
            ),
            None => format!(
                "database session {session} (application '{}', from {}) with no glow-run row",
                row.get::<Option<String>, _>("application_name")
                    .unwrap_or_default(),
                row.get::<Option<String>, _>("client")
                    .unwrap_or_else(|| "the local socket".into()),
            ),
        };
        Holder {
            session,
            run_id,
            description,
        }
    }))
}

/// Takes the lock, waiting up to `wait` in line when it is held. `Err` names the holder.
pub async fn take(
    connection: &mut PgConnection,
    key: i64,
    what: &str,
    wait: Option<Duration>,
) -> Result<(), String> {
    let locked: bool = with_timeout(
        "taking the release lock",
        sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *connection),
    )
    .await?;
    if locked {
        return Ok(());
    }
    let by = holder(connection, key)
        .await?
        .map_or_else(|| "another live run".to_owned(), |h| h.description);
    let Some(wait) = wait.filter(|w| !w.is_zero()) else {
        return Err(format!(
            "the release lock for {what} is held by {by}; wait for it to finish, or pass \
             --wait-lock DURATION to wait in line (a dry run needs no lock; \
             `glow-run unlock` ends a stuck holder)"
        ));
    };
    eprintln!(
        "waiting up to {} for the release lock for {what}, held by {by}",
        humantime::format_duration(wait)
    );
    let started = Instant::now();
    let statement = format!("set lock_timeout = {}", wait.as_millis().max(1));
    with_timeout(
        "setting lock_timeout",
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *connection),
    )
    .await?;
    let waited = tokio::time::timeout(
        wait + Duration::from_secs(5),
        sqlx::query("select pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *connection),
    )
    .await;
    let _ = sqlx::raw_sql("reset lock_timeout")
        .execute(&mut *connection)
        .await;
    match waited {
        Ok(Ok(_)) => {
            eprintln!(
                "took the release lock for {what} after {}",
                humantime::format_duration(Duration::from_millis(
                    started.elapsed().as_millis() as u64
                ))
            );
            Ok(())
        }
        Ok(Err(e)) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") => {
            let by = holder(connection, key)
                .await?
                .map_or_else(|| "another live run".to_owned(), |h| h.description);
            Err(format!(
                "the release lock for {what} is still held after {} by {by}",
                humantime::format_duration(wait)
            ))
        }
        Ok(Err(e)) => Err(format!("waiting for the release lock: {e}")),
        Err(_) => Err(format!(
            "the release lock for {what}: no answer within {}",
            humantime::format_duration(wait)
        )),
    }
}

/// `runs --state`: a `running` row whose session no longer holds its lock (or, for a dry run,
/// whose session is gone) was killed: it reads as `interrupted`.
pub const OUTCOME_SQL: &str = "case
    when r.outcome <> 'running' then r.outcome
    when r.lock_key is not null and exists (
        select 1 from pg_locks l where l.locktype = 'advisory' and l.granted and l.objsubid = 1
          and l.pid = r.backend_pid and l.classid::bigint = (r.lock_key >> 32)
          and l.objid::bigint = (r.lock_key & 4294967295)) then 'running'
    when r.lock_key is null and exists (
        select 1 from pg_stat_activity a where a.pid = r.backend_pid) then 'running'
    else 'interrupted' end";
