//! Read-only file access: `fs::read(path)`, `fs::exists(path)`, `fs::glob(pattern)`.
//! Relative paths resolve from the current working directory (run from the repository root).
//! Nothing here writes: evidence goes through `artifact`, where it is hashed and journaled.
//!
//! Every call is a read-only effect through the gate: journaled like any other effect, and
//! subject to `[fs] allow` (a `glob` returns only the matches that policy lets the script read).

use super::{Effect, HostContext, add_fn, install};
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Engine, Module};
use serde_json::json;
use std::path::Path;
use std::rc::Rc;

/// Runs one read through the gate (reads always perform, dry run or not).
fn read_effect<T>(
    ctx: &HostContext,
    action: &'static str,
    path: &str,
    perform: impl FnOnce() -> HostResult<T>,
) -> HostResult<T> {
    let effect = Effect {
        namespace: "fs",
        action,
        target: path.to_owned(),
        detail: json!({}),
        read_only: true,
        subject: Subject::Path(Path::new(path)),
    };
    ctx.read(effect, |_| perform())
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    let c = ctx.clone();
    add_fn(
        &mut module,
        "read",
        &["path: String", "String"],
        "The text of a file (UTF-8, a regular file of at most 64 MiB); an error naming the path when it cannot be read.",
        move |path: &str| -> HostResult<String> {
            read_effect(&c, "read", path, || {
                // Only a regular file, bounded: `/dev/zero` or a FIFO must not hang or fill memory.
                crate::regular_file::read_to_string(
                    std::path::Path::new(path),
                    crate::regular_file::READ_CAP,
                )
                .map_err(|e| host_error(format!("fs::read: cannot read '{path}': {e}")))
            })
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "exists",
        &["path: String", "bool"],
        "Whether a file or directory exists at `path`.",
        move |path: &str| -> HostResult<bool> {
            read_effect(&c, "exists", path, || Ok(Path::new(path).exists()))
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "glob",
        &["pattern: String", "Array"],
        "Paths matching a glob pattern (`supabase/migrations/*.sql`), sorted.",
        move |pattern: &str| -> HostResult<Array> {
            let effect = Effect {
                namespace: "fs",
                action: "glob",
                target: pattern.to_owned(),
                detail: json!({}),
                read_only: true,
                subject: Subject::None,
            };
            let found = glob_allowed(&c, pattern, effect)?;
            Ok(found.into_iter().map(Dynamic::from).collect())
        },
    );
    install(engine, "fs", module);
}

fn glob_allowed(ctx: &HostContext, pattern: &str, effect: Effect<'_>) -> HostResult<Vec<String>> {
    ctx.read(effect, |event| {
        let paths = glob::glob(pattern)
            .map_err(|e| host_error(format!("fs::glob: invalid pattern '{pattern}': {e}")))?;
        let mut found: Vec<String> = paths
            .filter_map(Result::ok)
            .filter(|path| ctx.policy.check(&Subject::Path(path)).is_ok())
            .map(|path| path.display().to_string())
            .collect();
        found.sort();
        event.insert("matches".into(), json!(found.len()));
        Ok(found)
    })
}
