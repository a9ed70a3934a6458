//! Stand-in executables for outside programs a runbook calls (`npm`, `supabase`, ...): each
//! records its argv to a log file and can be told to fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes an executable shell script `name` into `dir` that appends its argv (one line, tab
/// separated, prefixed by its name) to `dir/calls.log`, prints `stdout`, and exits with the
/// code in `$STANDIN_FAIL_<NAME>` when that is set (else 0).
pub fn standin(dir: &Path, name: &str, stdout: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let upper = name.to_uppercase().replace('-', "_");
    let script = format!(
        "#!/bin/sh\nprintf '%s' '{name}' >> '{log}'\nfor a in \"$@\"; do printf '\\t%s' \"$a\" >> '{log}'; done\nprintf '\\n' >> '{log}'\nprintf '%s' '{out}'\nif [ -n \"$STANDIN_FAIL_{upper}\" ]; then echo '{name} failed' >&2; exit \"$STANDIN_FAIL_{upper}\"; fi\nexit 0\n",
        log = dir.join("calls.log").display(),
        out = stdout.replace('\'', "'\\''"),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The calls recorded by stand-ins in `dir`, one `Vec` of argv (name first) per call.
pub fn calls(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// `PATH` with `dir` first.
pub fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}
