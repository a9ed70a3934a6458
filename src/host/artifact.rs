//! `artifact`: evidence a run keeps. `artifact::put(path)` copies a file or a directory into the
//! store, `artifact::write(name, value)` writes a string, blob or map/array (pretty JSON);
//! both return `#{ name, sha256, size, planned }`. `artifact::list()` lists what the store holds.
//!
//! The store root is `<state_dir>/artifacts/<run_id>` unless policy sets `[artifacts] root`
//! (a template: `{NAME}` takes `--var NAME=`, `{NAME:default}` a default when it is not
//! given, plus `{run_id}` and `{date}`; a value may be a relative or absolute path without `..`). It keeps
//! `manifest.json` (`{ "artifacts": [ { name, size, sha256, step, time } ] }`), rewritten
//! atomically after each artifact.
//!
//! Why it is built this way:
//! - Copy and hash happen in one streaming pass with a large buffer (sha2 picks the CPU's SHA
//!   extensions at run time), so evidence costs about what `cp` costs.
//! - Every file is written to a temp file in the store, fsynced, then renamed: a run killed at
//!   any point never leaves a partial file under a final name.
//! - Names are confined to the root: `..`, absolute names and NUL are refused, and every
//!   existing component is resolved to its real path, so a symlink cannot lead a write out.
//!   `put` of a directory does not follow symlinks that leave it.
//! - Both functions go through the effect gate, so a dry run plans them (with the size and hash
//!   a live run would store, computed by reading the source) and writes nothing.

use super::{Effect, HostContext, add_fn, install, map_of};
use crate::event::{ArtifactEvent, Body, Extra};
use crate::journal::now_rfc3339;
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Engine, Map, Module};
use serde_json::json;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

mod copy;
mod source;
mod store;

use copy::{SourceFile, copy_hashed, walk};
use store::{Entry, Store, read_manifest, write_atomic};
pub use store::{MANIFEST, TEMP_PREFIX, clean_name, root_for};

/// The run's artifact store, opened on first use. It lives in the run's [`HostContext`], so that
/// other namespaces keeping evidence (browser screenshots) write through the same store and
/// manifest as `artifact::*`.
#[derive(Default)]
pub struct Artifacts {
    store: RefCell<Option<Store>>,
}

/// Stores bytes as artifact `name` (what `artifact::write` does with a blob), for host code.
pub fn write_blob(ctx: &HostContext, name: &str, bytes: Vec<u8>) -> HostResult<Map> {
    write(ctx, &ctx.artifacts, name, &Dynamic::from_blob(bytes))
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let state = ctx.artifacts.clone();
    let mut module = Module::new();

    let (c, s) = (ctx.clone(), state.clone());
    add_fn(
        &mut module,
        "put",
        &["path: String", "Map"],
        "Copies a file, or a directory recursively, into the artifact store and returns\n\
         `#{ name, sha256, size, planned }` (a directory also has `files`). The name is the\n\
         path's last component. Symlinks that leave a directory are not followed.",
        move |path: &str| put(&c, &s, path, None),
    );
    let (c, s) = (ctx.clone(), state.clone());
    add_fn(
        &mut module,
        "put",
        &["path: String", "name: String", "Map"],
        "Copies a file or directory into the artifact store under `name`.",
        move |path: &str, name: &str| put(&c, &s, path, Some(name)),
    );
    let (c, s) = (ctx.clone(), state.clone());
    add_fn(
        &mut module,
        "write",
        &["name: String", "value: Dynamic", "Map"],
        "Writes a string, blob, or map/array (as pretty JSON) to the artifact store as `name`\n\
         and returns `#{ name, sha256, size, planned }`. Text is redacted before it is written.",
        move |name: &str, value: Dynamic| write(&c, &s, name, &value),
    );
    let (c, s) = (ctx.clone(), state);
    add_fn(
        &mut module,
        "list",
        &["Array"],
        "The artifacts in the store: `[#{ name, sha256, size, step, planned }]`.",
        move || list(&c, &s),
    );
    install(engine, "artifact", module);
}

impl Artifacts {
    /// Opens the store on first use: resolves the root, creates it in a live run, and loads an
    /// existing manifest (a policy root may be shared by a release's runs).
    fn with_store<T>(
        &self,
        ctx: &HostContext,
        f: impl FnOnce(&mut Store) -> HostResult<T>,
    ) -> HostResult<T> {
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            let root = root_for(ctx).map_err(|why| host_error(format!("artifact store: {why}")))?;
            let real = std::fs::canonicalize(&root).ok();
            let entries = read_manifest(&root.join(MANIFEST))
                .map_err(|why| host_error(format!("artifact store: {why}")))?;
            *slot = Some(Store {
                root,
                real,
                entries,
            });
        }
        f(slot.as_mut().expect("store opened above"))
    }
}

/// Records a stored or planned file: the store entry, the manifest, the journal event.
fn stored(
    ctx: &HostContext,
    store: &mut Store,
    name: &str,
    size: u64,
    sha256: &str,
    planned: bool,
    source: Option<&Path>,
) -> HostResult<()> {
    store.record(Entry {
        name: name.to_owned(),
        size,
        sha256: sha256.to_owned(),
        step: ctx.current_step(),
        time: now_rfc3339(),
        planned,
    });
    if !planned {
        store.write_manifest().map_err(|why| {
            host_error(format!(
                "artifact store: cannot write {}: {why}",
                store.root.join(MANIFEST).display()
            ))
        })?;
    }
    let root = store.real.as_ref().map_or_else(
        || std::path::absolute(&store.root).unwrap_or_else(|_| store.root.clone()),
        Clone::clone,
    );
    ctx.record(Body::Artifact(ArtifactEvent {
        name: name.to_owned(),
        sha256: sha256.to_owned(),
        size,
        planned,
        path: store.root.join(name).display().to_string(),
        root: root.display().to_string(),
        source: source.map(|source| source.display().to_string()),
        extra: Extra::new(),
    }));
    Ok(())
}

fn result_map(name: &str, size: u64, sha256: &str, planned: bool) -> Map {
    map_of([
        ("name", Dynamic::from(name.to_owned())),
        ("sha256", Dynamic::from(sha256.to_owned())),
        (
            "size",
            Dynamic::from(i64::try_from(size).unwrap_or(i64::MAX)),
        ),
        ("planned", Dynamic::from(planned)),
    ])
}

/// `put` in a dry run of a path that does not exist yet: plans the copy under its name.
/// `put` of a path that does not exist: a dry run plans the copy of a file or directory that a
/// planned step (a build, a test run) would have produced (a trailing `/` marks a directory);
/// a live run fails, journaled as a failed effect.
fn put_missing(
    ctx: &HostContext,
    state: &Artifacts,
    path: &str,
    name: Option<&str>,
    why: &std::io::Error,
) -> HostResult<Map> {
    let trimmed = path.trim_end_matches('/');
    let base = match name {
        Some(name) => name.to_owned(),
        None => Path::new(trimmed)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                host_error(format!(
                    "artifact::put: '{path}' has no name; use artifact::put(path, name)"
                ))
            })?,
    };
    let base = clean_name(&source::redacted_name(ctx, &base))
        .map_err(|why| host_error(format!("artifact::put: {why}")))?;
    let target = if path.ends_with('/') {
        format!("{base}/")
    } else {
        base.clone()
    };
    state.with_store(ctx, |_store| {
        let effect = Effect {
            namespace: "artifact",
            action: "put",
            target,
            detail: json!({ "source": path, "exists": false }),
            read_only: false,
            subject: Subject::None,
        };
        ctx.perform(
            effect,
            || {
                Ok(map_of([
                    ("name", Dynamic::from(base.clone())),
                    ("sha256", Dynamic::from(String::new())),
                    ("size", Dynamic::from(0_i64)),
                    ("planned", Dynamic::TRUE),
                ]))
            },
            |_event| {
                Err(host_error(format!(
                    "artifact::put: cannot read '{path}': {why}"
                )))
            },
        )
    })
}

fn put(ctx: &HostContext, state: &Artifacts, path: &str, name: Option<&str>) -> HostResult<Map> {
    let source = PathBuf::from(path);
    let meta = match std::fs::metadata(&source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return put_missing(ctx, state, path, name, &e);
        }
        Err(e) => {
            return Err(host_error(format!(
                "artifact::put: cannot read '{path}': {e}"
            )));
        }
    };
    let base = put_name(ctx, &source, name)?;
    let files = put_files(ctx, &source, &base, meta.is_dir())?;
    state.with_store(ctx, |store| {
        // Names are checked before anything is journaled or written.
        store.destinations(&files)?;
        let effect = Effect {
            namespace: "artifact",
            action: "put",
            target: if meta.is_dir() {
                format!("{base}/")
            } else {
                base.clone()
            },
            detail: json!({ "source": path, "files": files.len() }),
            read_only: false,
            subject: Subject::None,
        };
        let store = std::cell::RefCell::new(store);
        let (results, planned) = ctx.perform(
            effect,
            // The plan still says what would be stored: read the sources, write nothing.
            || {
                Ok((
                    store_files(ctx, &mut store.borrow_mut(), &files, false)?,
                    true,
                ))
            },
            |_event| {
                Ok((
                    store_files(ctx, &mut store.borrow_mut(), &files, true)?,
                    false,
                ))
            },
        )?;
        Ok(put_result(&base, meta.is_dir(), results, planned))
    })
}

/// The artifact's name: given, else the source's own file name; redacted and checked.
fn put_name(ctx: &HostContext, source: &Path, name: Option<&str>) -> HostResult<String> {
    let path = source.display();
    let base = match name {
        Some(name) => name.to_owned(),
        None => std::fs::canonicalize(source)
            .ok()
            .and_then(|real| real.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                host_error(format!(
                    "artifact::put: '{path}' has no name; use artifact::put(path, name)"
                ))
            })?,
    };
    clean_name(&source::redacted_name(ctx, &base))
        .map_err(|why| host_error(format!("artifact::put: {why}")))
}

/// The files to store: the one file, or a directory's regular files (the others are named in
/// a warning).
fn put_files(
    ctx: &HostContext,
    source: &Path,
    base: &str,
    is_dir: bool,
) -> HostResult<Vec<SourceFile>> {
    if !is_dir {
        return Ok(vec![SourceFile {
            source: source.to_path_buf(),
            name: base.to_owned(),
        }]);
    }
    let unreadable = |e: std::io::Error| {
        host_error(format!(
            "artifact::put: cannot read '{}': {e}",
            source.display()
        ))
    };
    let real_dir = std::fs::canonicalize(source).map_err(unreadable)?;
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    walk(source, &real_dir, base, &mut files, &mut skipped).map_err(unreadable)?;
    for file in &mut files {
        file.name = source::redacted_name(ctx, &file.name);
    }
    for skip in &skipped {
        ctx.log("warn", &format!("artifact::put: not stored: {skip}"));
    }
    Ok(files)
}

/// Stores each file (`live`), or reads and hashes it to say what a live run would store (a
/// dry run, nothing written); either way records it in the store's manifest. Returns
/// `(name, size, sha256)` for each.
fn store_files(
    ctx: &HostContext,
    store: &mut Store,
    files: &[SourceFile],
    live: bool,
) -> HostResult<Vec<(String, u64, String)>> {
    let destinations = if live {
        store.create_then(|store| store.destinations(files))?
    } else {
        Vec::new()
    };
    let mut results = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let mut input = source::open(&file.source)?;
        let (size, sha256) = match destinations.get(index) {
            Some(dest) => {
                write_atomic(dest, |out| match source::narrow_permissions(out, &input) {
                    Ok(()) => copy_hashed(ctx, &mut input, Some(out)),
                    Err(e) => Ok(Err(e)),
                })?
                .map_err(|e| {
                    host_error(format!(
                        "artifact::put: storing '{}' as {}: {e}",
                        file.source.display(),
                        dest.display()
                    ))
                })?
            }
            None => copy_hashed(ctx, &mut input, None)?.map_err(|e| {
                host_error(format!(
                    "artifact::put: reading '{}': {e}",
                    file.source.display()
                ))
            })?,
        };
        let source = Some(file.source.as_path());
        stored(ctx, store, &file.name, size, &sha256, !live, source)?;
        results.push((file.name.clone(), size, sha256));
    }
    Ok(results)
}

/// The map `artifact::put` returns: the file's, or a directory's with its `files`; a
/// directory's hash is over `sha256  name` lines (what `sha256sum` prints).
fn put_result(
    base: &str,
    is_dir: bool,
    mut results: Vec<(String, u64, String)>,
    planned: bool,
) -> Map {
    if !is_dir {
        let (name, size, sha256) = results.pop().unwrap_or_default();
        return result_map(&name, size, &sha256, planned);
    }
    let listing: String = results
        .iter()
        .map(|(name, _, sha)| format!("{sha}  {name}\n"))
        .collect();
    let total = results.iter().map(|(_, size, _)| size).sum();
    let digest = crate::config::sha256_hex(listing.as_bytes());
    let mut map = result_map(base, total, &digest, planned);
    let files: Array = results
        .iter()
        .map(|(name, size, sha)| Dynamic::from(result_map(name, *size, sha, planned)))
        .collect();
    map.insert("files".into(), Dynamic::from(files));
    map
}

fn write(ctx: &HostContext, state: &Artifacts, name: &str, value: &Dynamic) -> HostResult<Map> {
    let name = clean_name(&source::redacted_name(ctx, name))
        .map_err(|why| host_error(format!("artifact::write: {why}")))?;
    // Everything written is redacted, a blob's bytes too.
    let bytes: Vec<u8> = if value.is_blob() {
        (ctx.redactor
            .redact_bytes(&value.clone().cast::<rhai::Blob>()))
        .into_owned()
    } else if value.is_map() || value.is_array() {
        let mut json = crate::host::json::from_dynamic(value);
        ctx.redactor.redact_json(&mut json);
        let mut text = serde_json::to_vec_pretty(&json).unwrap_or_default();
        text.push(b'\n');
        text
    } else {
        ctx.redact(&value.to_string()).into_bytes()
    };
    let sha256 = crate::config::sha256_hex(&bytes);
    let size = bytes.len() as u64;
    state.with_store(ctx, |store| {
        store
            .destination(&name)
            .map_err(|why| host_error(format!("artifact::write: {why}")))?;
        let effect = Effect {
            namespace: "artifact",
            action: "write",
            target: name.clone(),
            detail: json!({ "size": size }),
            read_only: false,
            subject: Subject::None,
        };
        let store = std::cell::RefCell::new(store);
        let planned = ctx.perform(
            effect,
            || {
                stored(
                    ctx,
                    &mut store.borrow_mut(),
                    &name,
                    size,
                    &sha256,
                    true,
                    None,
                )?;
                Ok(true)
            },
            |_event| {
                let mut store = store.borrow_mut();
                let dest = store.create_then(|store| {
                    store
                        .destination(&name)
                        .map_err(|why| host_error(format!("artifact::write: {why}")))
                })?;
                write_atomic(&dest, |file| Ok(file.write_all(&bytes)))?.map_err(|e| {
                    host_error(format!("artifact::write: storing {}: {e}", dest.display()))
                })?;
                stored(ctx, &mut store, &name, size, &sha256, false, None)?;
                Ok(false)
            },
        )?;
        Ok(result_map(&name, size, &sha256, planned))
    })
}

fn list(ctx: &HostContext, state: &Artifacts) -> HostResult<Array> {
    state.with_store(ctx, |store| {
        Ok(store
            .entries
            .iter()
            .map(|e| {
                let mut map = result_map(&e.name, e.size, &e.sha256, e.planned);
                map.insert(
                    "step".into(),
                    e.step.clone().map_or(Dynamic::UNIT, Dynamic::from),
                );
                Dynamic::from(map)
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn names_are_cleaned_and_hostile_names_refused() {
        assert_eq!(clean_name("a/./b.txt").unwrap(), "a/b.txt");
        for hostile in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a\0b",
            "",
            ".",
            "manifest.json",
        ] {
            assert!(clean_name(hostile).is_err(), "{hostile:?} accepted");
        }
    }
}
