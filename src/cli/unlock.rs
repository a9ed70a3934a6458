//! `glow-run unlock`: end a stuck release lock in the shared state.

use crate::arguments::GlobalFlags;
use crate::error::Error;

/// `glow-run unlock SCRIPT --env NAME --reason TEXT --state URL`: end a stuck release lock.
pub fn unlock(
    global: &GlobalFlags,
    script: &str,
    environment: &str,
    reason: &str,
    yes: bool,
) -> Result<i32, Error> {
    let Some(url) = &global.state else {
        return Err(Error::usage(
            "unlock needs --state postgres://... (the release lock lives in the shared state)",
        ));
    };
    crate::shared_state::unlock(url, script, environment, reason, yes)
}
