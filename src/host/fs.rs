//! Read-only file access: `fs::read(path)`, `fs::exists(path)`, `fs::glob(pattern)`.
//! Relative paths resolve from the current working directory (run from the repository root).
//! Nothing here writes: evidence goes through `artifact`, where it is hashed and journaled.

use super::{HostContext, add_fn, install};
use crate::options::{HostResult, host_error};
use rhai::{Array, Dynamic, Engine, Module};
use std::rc::Rc;

pub fn register(engine: &mut Engine, _ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    add_fn(
        &mut module,
        "read",
        &["path: String", "String"],
        "The text of a file (UTF-8, a regular file of at most 64 MiB); an error naming the path when it cannot be read.",
        |path: &str| -> HostResult<String> {
            // Only a regular file, bounded: `/dev/zero` or a FIFO must not hang or fill memory.
            crate::regular_file::read_to_string(
                std::path::Path::new(path),
                crate::regular_file::READ_CAP,
            )
            .map_err(|e| host_error(format!("fs::read: cannot read '{path}': {e}")))
        },
    );
    add_fn(
        &mut module,
        "exists",
        &["path: String", "bool"],
        "Whether a file or directory exists at `path`.",
        |path: &str| std::path::Path::new(path).exists(),
    );
    add_fn(
        &mut module,
        "glob",
        &["pattern: String", "Array"],
        "Paths matching a glob pattern (`supabase/migrations/*.sql`), sorted.",
        |pattern: &str| -> HostResult<Array> {
            let paths = glob::glob(pattern)
                .map_err(|e| host_error(format!("fs::glob: invalid pattern '{pattern}': {e}")))?;
            let mut found: Vec<String> = paths
                .filter_map(Result::ok)
                .map(|path| path.display().to_string())
                .collect();
            found.sort();
            Ok(found.into_iter().map(Dynamic::from).collect())
        },
    );
    install(engine, "fs", module);
}
