//! `[exec] allow` by real path. Comparing file names let `./git`, `/any/dir/git` or
//! `evil/../evil/git` (each a symlink to `sh`) pass as "git". Instead every allowed name is
//! resolved on PATH (a name with a `/`, from the working directory) to its real path when the
//! policy is loaded, and a program runs only if its own real path is one of them. An entry not
//! found at start (a tool an earlier step installs) is resolved again when it is needed.

use std::path::{Path, PathBuf};

/// Where an allowed entry is now: on PATH for a bare name, from the working directory
/// otherwise; symlinks resolved.
fn real_path_of(entry: &str) -> Option<PathBuf> {
    let found = if entry.contains('/') {
        PathBuf::from(entry)
    } else {
        which::which(entry).ok()?
    };
    std::fs::canonicalize(found).ok()
}

/// The real paths of the allowed entries that exist now.
pub fn resolve(allow: &[String]) -> Vec<PathBuf> {
    allow
        .iter()
        .filter_map(|entry| real_path_of(entry))
        .collect()
}

/// Whether the program `name`, found at `path`, is allowed; `Err` says why not.
pub fn check(
    allow: &[String],
    resolved: &[PathBuf],
    name: &str,
    path: Option<&Path>,
) -> Result<(), String> {
    let Some(path) = path else {
        // Not found anywhere: allowed only when listed as given (it then fails as "not
        // found", or is planned in a dry run); nothing can run either way.
        return if allow.iter().any(|a| a == name) {
            Ok(())
        } else {
            Err("it is not in".to_owned())
        };
    };
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("its real path cannot be resolved ({e}), so it is not in"))?;
    if resolved.contains(&real) {
        return Ok(());
    }
    let late = allow
        .iter()
        .filter_map(|entry| real_path_of(entry))
        .any(|allowed| allowed == real);
    if late {
        return Ok(());
    }
    Err(format!("its real path {} is not in", real.display()))
}
