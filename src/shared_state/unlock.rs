//! `glow-run unlock SCRIPT [--env NAME] --reason TEXT [--yes] --state URL`: ends the session
//! that holds a stuck release lock (`pg_terminate_backend`), after showing who holds it and
//! asking (or `--yes`), and records who ended it and why in the shared history: on the
//! holder's `glow_runs` row (outcome `unlocked`), or on a row of its own when the holder has
//! none. The holder run notices within a second and stops (see `shared_state.rs`).

use super::lock::holder;
use super::{connect, lock_key, script_name, with_timeout};
use crate::error::{EXIT_OK, Error};
use crate::redact::Redactor;
use sqlx::Row;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long `unlock` waits for the terminated session to let go of the lock.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Who ended a run's session and why, when `unlock` recorded it (for the run that lost it).
/// `unlock` records just after ending the session, so this looks for a moment.
pub async fn reason_for(url: &str, run_id: &str) -> Option<String> {
    let lookup = async {
        let mut connection = connect(url).await.ok()?;
        let row = loop {
            let row = sqlx::query(
                "select unlocked_by, unlock_reason from glow_runs where run_id = $1 and unlocked_by is not null",
            )
            .bind(run_id)
            .fetch_optional(&mut connection)
            .await
            .ok()?;
            match row {
                Some(row) => break row,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Some(format!(
            "`glow-run unlock` by {}: {}",
            row.get::<String, _>("unlocked_by"),
            row.get::<Option<String>, _>("unlock_reason")
                .unwrap_or_default()
        ))
    };
    tokio::time::timeout(Duration::from_secs(3), lookup)
        .await
        .ok()
        .flatten()
}

/// The `unlock` command; see the module doc.
pub fn unlock(
    url: &str,
    script: &str,
    environment: &str,
    reason: &str,
    yes: bool,
) -> Result<i32, Error> {
    if reason.trim().is_empty() {
        return Err(Error::usage(
            "unlock: --reason must say why the lock is ended (it is recorded)",
        ));
    }
    let redactor = Redactor::new();
    let display_url = redactor.register_url(url);
    let context = format!("shared state {display_url}");
    let script = script_name(script);
    let key = lock_key(&script, environment);
    let what = format!("{script} (environment {environment})");
    let by = crate::identity::initiator();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the runtime", e))?;
    let fail = |why: String| Error::host(&context, redactor.redact(&why));
    let mut connection = runtime.block_on(connect(url)).map_err(fail)?;
    let Some(found) = runtime
        .block_on(holder(&mut connection, key))
        .map_err(fail)?
    else {
        eprintln!("the release lock for {what} is free: nothing to unlock");
        return Ok(EXIT_OK);
    };
    eprintln!(
        "the release lock for {what} is held by {}",
        found.description
    );
    if !yes {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Error::usage(
                "unlock: not at a terminal to confirm; pass --yes to end the holder's session",
            ));
        }
        let confirmed = dialoguer::Confirm::new()
            .with_prompt(format!(
                "End database session {} and free the lock?",
                found.session
            ))
            .default(false)
            .interact_on(&console::Term::stderr())
            .unwrap_or(false);
        if !confirmed {
            eprintln!("unlock: not confirmed; the lock is left as it is");
            return Ok(crate::error::EXIT_FAILED);
        }
    }
    runtime
        .block_on(async {
            let ended: bool = with_timeout(
                "ending the holder's session",
                sqlx::query_scalar("select pg_terminate_backend($1)")
                    .bind(found.session)
                    .fetch_one(&mut connection),
            )
            .await?;
            if !ended {
                return Err(format!(
                    "pg_terminate_backend({}) refused: the session is gone or this role may not end it",
                    found.session
                ));
            }
            record(&mut connection, &found, &script, environment, &by, reason).await?;
            let deadline = Instant::now() + RELEASE_WAIT;
            while holder(&mut connection, key).await?.is_some() {
                if Instant::now() >= deadline {
                    return Err("the session was ended but the lock is still held".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        })
        .map_err(fail)?;
    eprintln!(
        "ended database session {} and freed the release lock for {what}; recorded: unlocked by {by}: {reason}",
        found.session
    );
    Ok(EXIT_OK)
}

async fn record(
    connection: &mut sqlx::postgres::PgConnection,
    found: &super::lock::Holder,
    script: &str,
    environment: &str,
    by: &str,
    reason: &str,
) -> Result<(), String> {
    let query = match &found.run_id {
        Some(run_id) => sqlx::query(
            "update glow_runs set outcome = 'unlocked', ended_at = now(), unlocked_at = now(),
                    unlocked_by = $2, unlock_reason = $3 where run_id = $1",
        )
        .bind(run_id.clone())
        .bind(by)
        .bind(reason),
        None => sqlx::query(
            "insert into glow_runs (run_id, script, sha256, mode, environment, initiator, backend_pid,
                                    ended_at, outcome, unlocked_at, unlocked_by, unlock_reason)
             values ($1, $4, '', 'unlock', $5, $2, $6, now(), 'unlocked', now(), $2, $3)",
        )
        .bind(format!(
            "unlock-{}-{}",
            found.session,
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
        ))
        .bind(by)
        .bind(reason)
        .bind(script)
        .bind(environment)
        .bind(found.session),
    };
    with_timeout("recording the unlock", query.execute(connection))
        .await
        .map(|_| ())
}
