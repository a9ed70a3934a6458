//! `[fs] allow = ["GO-LIVE/**", "supabase/migrations/*.sql"]`: the files `fs::read`, `fs::exists`
//! and `fs::glob` may see. Without the key every path may be read (the default, as before); with
//! it a team confines a runbook's reads to its workspace.
//!
//! Patterns are globs (`*` stays inside one folder, `**` crosses folders); relative patterns
//! and paths resolve from the working directory, like every path a script gives. A path is
//! compared by its real location (symlinks and `..` resolved), so `GO-LIVE/../.env` or a
//! symlink inside `GO-LIVE/` to `/etc` does not pass as `GO-LIVE/**`.

use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsPolicy {
    /// Glob patterns of readable paths; `None` allows any.
    pub allow: Option<Vec<String>>,
}

impl FsPolicy {
    /// `Err(message)` when `[fs] allow` is set and no pattern matches the path's real location.
    pub fn check(&self, path: &Path, file_label: &str) -> Result<(), String> {
        let Some(allow) = &self.allow else {
            return Ok(());
        };
        let cwd = std::env::current_dir()
            .and_then(std::fs::canonicalize)
            .unwrap_or_default();
        let real = real_location(&cwd.join(path));
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let allowed = allow.iter().any(|pattern| {
            let full = normalise(&cwd.join(pattern));
            glob::Pattern::new(&full.to_string_lossy())
                .is_ok_and(|pattern| pattern.matches_path_with(&real, options))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "policy refuses reading '{}': it is not in [fs] allow = {allow:?} ({file_label})",
                path.display()
            ))
        }
    }
}

/// The path with symlinks resolved as far as it exists, the rest normalised lexically.
fn real_location(path: &Path) -> PathBuf {
    let path = normalise(path);
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path,
        }
    }
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confines_reads_to_the_patterns() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("GO-LIVE/docs")).unwrap();
        std::fs::write(dir.path().join("GO-LIVE/docs/a.md"), "a").unwrap();
        std::fs::write(dir.path().join(".env"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("GO-LIVE/etc")).unwrap();
        let root = dir.path().display().to_string();
        let policy = FsPolicy {
            allow: Some(vec![format!("{root}/GO-LIVE/**")]),
        };
        assert!(
            policy
                .check(&dir.path().join("GO-LIVE/docs/a.md"), "g")
                .is_ok()
        );
        for refused in ["GO-LIVE/../.env", ".env", "GO-LIVE/etc/passwd"] {
            let err = policy.check(&dir.path().join(refused), "g").unwrap_err();
            assert!(err.contains("[fs] allow"), "{refused}: {err}");
        }
    }
}
