//! Hot reload (`--watch`): not built yet (see the authoring issue).

use crate::config::RunSettings;
use crate::error::Error;

pub fn watch(_settings: RunSettings) -> Result<i32, Error> {
    Err(Error::usage("--watch is not available yet"))
}
