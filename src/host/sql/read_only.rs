//! What a read-only session (every dry run, and `[sql] allow_writes = false`) adds beyond the
//! statement classifier (`classify.rs`), and the range the drivers accept for a timeout.
//!
//! - SQLite runs with `PRAGMA query_only`, so even a statement the classifier let through
//!   cannot change the database.
//! - A WAL-mode SQLite file read by a dry run must not gain `-wal`/`-shm` files: when it has no
//!   `-wal` file (nothing to miss in one), it is opened `immutable`, which reads the main file
//!   without creating either.

use crate::options::{HostResult, host_error};
use sqlx::sqlite::SqliteConnectOptions;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Both drivers take the timeout as an `i32` of milliseconds (PostgreSQL's
/// `statement_timeout`, SQLite's busy timeout): about 24 days 20 hours.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

pub fn check_timeout(timeout: Duration) -> HostResult<()> {
    if timeout > MAX_TIMEOUT {
        return Err(host_error(format!(
            "sql::connect: option 'timeout' ({}) is out of range: the database drivers take at most {}",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_TIMEOUT)
        )));
    }
    Ok(())
}

/// The options of a read-only SQLite session.
pub fn sqlite(options: SqliteConnectOptions) -> SqliteConnectOptions {
    let file = options.get_filename().to_owned();
    let options = options.pragma("query_only", "ON");
    if is_wal(&file) && !wal_file(&file).exists() {
        options.immutable(true)
    } else {
        options
    }
}

/// Whether the database file's header says WAL mode (bytes 18 and 19 are 2).
fn is_wal(file: &Path) -> bool {
    let mut header = [0u8; 20];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| {
            header.starts_with(b"SQLite format 3\0") && header[18] == 2 && header[19] == 2
        })
}

fn wal_file(file: &Path) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}
