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

use super::{Effect, HostContext, Outcome, add_fn, install, map_of};
use crate::journal::now_rfc3339;
use crate::options::{HostResult, host_error};
use crate::policy::Subject;
use rhai::{Array, Dynamic, Engine, Map, Module};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Read/write chunk for copy-and-hash: large enough that syscalls and hashing calls amortise.
const CHUNK: usize = 1024 * 1024;
/// Buffers in flight between the copying thread and the hashing thread.
const POOL: usize = 4;
/// Every this many bytes written, the kernel is asked to start writing them to disk, so the
/// fsync at the end waits for the last few MiB instead of the whole file.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;
/// Temp files in the store start with this (verify and bundle ignore them).
pub const TEMP_PREFIX: &str = ".glow-tmp-";
pub const MANIFEST: &str = "manifest.json";

/// One stored (or, in a dry run, planned) artifact.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    size: u64,
    sha256: String,
    step: Option<String>,
    time: String,
    planned: bool,
}

/// The store of one run, opened on first use.
struct Store {
    /// Where the root is, as resolved from the template (relative to the working directory).
    root: PathBuf,
    /// The root's real path, once it exists (live: created on open).
    real: Option<PathBuf>,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Artifacts {
    store: RefCell<Option<Store>>,
}

thread_local! {
    /// The store of the run on this engine thread (each run has its own engine thread), so that
    /// other namespaces keeping evidence (browser screenshots) write through the same store and
    /// manifest as `artifact::*`.
    static SHARED: RefCell<Option<(String, Rc<Artifacts>)>> = const { RefCell::new(None) };
}

fn shared_state(ctx: &HostContext) -> Rc<Artifacts> {
    SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        match &*shared {
            Some((run_id, state)) if *run_id == ctx.run_id => state.clone(),
            _ => {
                let state = Rc::new(Artifacts::default());
                *shared = Some((ctx.run_id.clone(), state.clone()));
                state
            }
        }
    })
}

/// Stores bytes as artifact `name` (what `artifact::write` does with a blob), for host code.
pub fn write_blob(ctx: &HostContext, name: &str, bytes: Vec<u8>) -> HostResult<Map> {
    write(ctx, &shared_state(ctx), name, &Dynamic::from_blob(bytes))
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let state = shared_state(ctx);
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

/// The store root for this run: the policy template filled in, or `<state_dir>/artifacts/<run_id>`.
pub fn root_for(ctx: &HostContext) -> Result<PathBuf, String> {
    let Some(template) = &ctx.policy.artifacts.root else {
        return Ok(ctx.settings.state_dir.join("artifacts").join(&ctx.run_id));
    };
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("[artifacts] root \"{template}\" has an unclosed '{{'"))?;
        let (key, default) = match after[..close].split_once(':') {
            Some((key, default)) => (key, Some(default)),
            None => (&after[..close], None),
        };
        let value = match key {
            "run_id" => ctx.run_id.clone(),
            "date" => chrono::Utc::now().format("%Y-%m-%d").to_string(),
            name => match (ctx.settings.vars.get(name), default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(format!(
                        "[artifacts] root \"{template}\" uses {{{name}}}, but no --var {name}=... was given"
                    ));
                }
            },
        };
        // A value may be a path (`--var workspace=examples/app`, `.`), but never climb out with
        // `..`; a tag or date stays one folder name.
        let climbs = Path::new(&value)
            .components()
            .any(|c| matches!(c, Component::ParentDir));
        if value.is_empty() || value.contains('\0') || climbs {
            return Err(format!(
                "[artifacts] root \"{template}\": {{{key}}} = \"{value}\" is not a usable folder name"
            ));
        }
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
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
            if !ctx.is_dry_run() {
                std::fs::create_dir_all(&root).map_err(|e| {
                    host_error(format!(
                        "artifact store: cannot create {}: {e}",
                        root.display()
                    ))
                })?;
            }
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

/// Reads a manifest's entries (none when the file does not exist).
fn read_manifest(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let items = value["artifacts"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .map(|item| Entry {
            name: item["name"].as_str().unwrap_or_default().to_owned(),
            size: item["size"].as_u64().unwrap_or(0),
            sha256: item["sha256"].as_str().unwrap_or_default().to_owned(),
            step: item["step"].as_str().map(str::to_owned),
            time: item["time"].as_str().unwrap_or_default().to_owned(),
            planned: false,
        })
        .collect())
}

/// Checks an artifact name as text and returns it normalised (`a/./b` -> `a/b`).
/// Refuses empty names, NUL, absolute paths, `..` and the manifest's own name.
pub fn clean_name(name: &str) -> Result<String, String> {
    if name.contains('\0') {
        return Err(format!("artifact name {name:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "artifact name '{name}' contains '..'; names stay inside the store"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "artifact name '{name}' is absolute; names are relative to the store"
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("artifact name '{name}' is empty"));
    }
    let clean = parts.join("/");
    if clean == MANIFEST || parts.iter().any(|p| p.starts_with(TEMP_PREFIX)) {
        return Err(format!("artifact name '{name}' is reserved by the store"));
    }
    Ok(clean)
}

/// Resolves every existing component of `root/name` to its real path and refuses a name that
/// a symlink would lead out of the root. Components that do not exist yet are created later
/// inside a directory that was checked.
fn confine(real_root: &Path, name: &str) -> Result<PathBuf, String> {
    let mut current = real_root.to_path_buf();
    for part in name.split('/') {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("artifact '{name}': {}: {e}", current.display())),
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&current).map_err(|_| {
                    format!(
                        "artifact '{name}': {} is a symlink that leads nowhere",
                        current.display()
                    )
                })?;
                if !real.starts_with(real_root) {
                    return Err(format!(
                        "artifact '{name}': {} is a symlink to {}, outside the store",
                        current.display(),
                        real.display()
                    ));
                }
            }
            Ok(_) => {}
        }
    }
    Ok(real_root.join(name))
}

/// Copies `reader` into `out` (when given) and hashes it in the same pass: each chunk is read
/// once, written by this thread and hashed by a helper thread meanwhile (a small pool of
/// buffers goes round), so hashing overlaps the write instead of adding to it.
fn copy_hashed(
    ctx: &HostContext,
    reader: &mut (impl Read + Send),
    out: Option<&mut File>,
) -> HostResult<Result<(u64, String), std::io::Error>> {
    let token = ctx.current_token();
    let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(POOL);
    let (give_back, free) = std::sync::mpsc::sync_channel::<Vec<u8>>(POOL);
    for _ in 0..POOL {
        let _ = give_back.send(vec![0u8; CHUNK]);
    }
    let mut out = out;
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for (buffer, n) in chunks {
                hasher.update(&buffer[..n]);
                let _ = give_back.send(buffer);
            }
            hex::encode(hasher.finalize())
        });
        let mut size = 0u64;
        let mut flushed = 0u64;
        let copied = loop {
            if token.is_cancelled() {
                break Err(None);
            }
            let Ok(mut buffer) = free.recv() else {
                break Err(None);
            };
            let n = match reader.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let _ = to_hasher.send((buffer, 0));
                    continue;
                }
                Err(e) => break Err(Some(e)),
            };
            if let Some(out) = out.as_deref_mut() {
                if let Err(e) = out.write_all(&buffer[..n]) {
                    break Err(Some(e));
                }
                if size + n as u64 - flushed >= WRITEBACK_EVERY {
                    start_writeback(out, flushed, size + n as u64 - flushed);
                    flushed = size + n as u64;
                }
            }
            size += n as u64;
            if to_hasher.send((buffer, n)).is_err() {
                break Err(None);
            }
        };
        drop(to_hasher);
        let sha256 = hasher.join().unwrap_or_default();
        match copied {
            Ok(()) => Ok(Ok((size, sha256))),
            Err(Some(e)) => Ok(Err(e)),
            Err(None) => Err(ctx.cancelled_error()),
        }
    })
}

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting (Linux
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works while the copy goes on, and the
/// final fsync, which still guarantees durability, has little left to do. A failure only
/// loses the head start.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor we own, with no pointers.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes `dest` atomically: a temp file beside it, filled, fsynced, renamed over the name.
fn write_atomic<T>(
    dest: &Path,
    fill: impl FnOnce(&mut File) -> HostResult<Result<T, std::io::Error>>,
) -> HostResult<Result<T, std::io::Error>> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let attempt = (|| {
        std::fs::create_dir_all(dir)?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            // Evidence is meant to be read (umask still applies); tempfile's default is 0600.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
    })();
    let mut temp = match attempt {
        Ok(temp) => temp,
        Err(e) => return Ok(Err(e)),
    };
    let value = match fill(temp.as_file_mut())? {
        Ok(value) => value,
        Err(e) => return Ok(Err(e)),
    };
    let finish = (|| {
        temp.as_file().sync_all()?;
        temp.persist(dest).map_err(|e| e.error)?;
        // The rename itself must survive a crash too.
        File::open(dir)?.sync_all()
    })();
    Ok(finish.map(|()| value))
}

impl Store {
    /// The real path `name` will be stored at, after the confinement checks.
    fn destination(&self, name: &str) -> Result<PathBuf, String> {
        match &self.real {
            Some(real) => confine(real, name),
            // Dry run and the root does not exist: nothing there to escape through.
            None => Ok(self.root.join(name)),
        }
    }

    fn record(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Rewrites `manifest.json` atomically from the stored (not planned) entries.
    fn write_manifest(&self) -> Result<(), String> {
        let items: Vec<Value> = self
            .entries
            .iter()
            .filter(|e| !e.planned)
            .map(|e| json!({ "name": e.name, "size": e.size, "sha256": e.sha256, "step": e.step, "time": e.time }))
            .collect();
        let mut text =
            serde_json::to_vec_pretty(&json!({ "artifacts": items })).unwrap_or_default();
        text.push(b'\n');
        let real = self.real.as_ref().ok_or("the store root does not exist")?;
        let result = write_atomic(&real.join(MANIFEST), |file| Ok(file.write_all(&text)));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("cancelled".into()),
        }
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
    let mut event = json!({
        "name": name,
        "sha256": sha256,
        "size": size,
        "planned": planned,
        "path": store.root.join(name).display().to_string(),
        "root": store.real.as_ref().map_or_else(|| std::path::absolute(&store.root).unwrap_or_else(|_| store.root.clone()), Clone::clone).display().to_string(),
    });
    if let Some(source) = source {
        event["source"] = json!(source.display().to_string());
    }
    ctx.emit("artifact", event);
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

/// One file of a `put`: its source and the name it gets in the store.
struct SourceFile {
    source: PathBuf,
    name: String,
}

/// Lists the files under `dir` (sorted, recursive). Symlinks are followed only when they stay
/// inside `dir` and point at a file; the others are returned as skipped, with the reason.
fn walk(
    dir: &Path,
    real_dir: &Path,
    prefix: &str,
    files: &mut Vec<SourceFile>,
    skipped: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, real_dir, &name, files, skipped)?;
        } else if kind.is_file() {
            files.push(SourceFile { source: path, name });
        } else if kind.is_symlink() {
            match std::fs::canonicalize(&path) {
                Ok(real) if real.starts_with(real_dir) && real.is_file() => {
                    files.push(SourceFile { source: real, name })
                }
                Ok(real) if !real.starts_with(real_dir) => {
                    skipped.push(format!(
                        "{} (a symlink out of the directory)",
                        path.display()
                    ));
                }
                _ => skipped.push(format!(
                    "{} (a symlink to a directory or nothing)",
                    path.display()
                )),
            }
        } else {
            skipped.push(format!("{} (not a regular file)", path.display()));
        }
    }
    Ok(())
}

/// `put` in a dry run of a path that does not exist yet: plans the copy under its name.
fn put_missing(
    ctx: &HostContext,
    state: &Artifacts,
    path: &str,
    name: Option<&str>,
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
    let base = clean_name(&base).map_err(|why| host_error(format!("artifact::put: {why}")))?;
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
        match ctx.effect(effect, |_event| {
            Err(host_error(format!("artifact::put: cannot read '{path}'")))
        })? {
            Outcome::Planned => Ok(map_of([
                ("name", Dynamic::from(base.clone())),
                ("sha256", Dynamic::from(String::new())),
                ("size", Dynamic::from(0_i64)),
                ("planned", Dynamic::TRUE),
            ])),
            Outcome::Done(()) => unreachable!("a dry run plans every write"),
        }
    })
}

fn put(ctx: &HostContext, state: &Artifacts, path: &str, name: Option<&str>) -> HostResult<Map> {
    let source = PathBuf::from(path);
    let meta = match std::fs::metadata(&source) {
        Ok(meta) => meta,
        // A dry run plans the copy of a file or directory that a planned step (a build, a
        // test run) would have produced; a trailing `/` on the path marks a directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && ctx.is_dry_run() => {
            return put_missing(ctx, state, path, name);
        }
        Err(e) => {
            return Err(host_error(format!(
                "artifact::put: cannot read '{path}': {e}"
            )));
        }
    };
    let base = match name {
        Some(name) => name.to_owned(),
        None => std::fs::canonicalize(&source)
            .ok()
            .and_then(|real| real.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                host_error(format!(
                    "artifact::put: '{path}' has no name; use artifact::put(path, name)"
                ))
            })?,
    };
    let base = clean_name(&base).map_err(|why| host_error(format!("artifact::put: {why}")))?;

    let mut skipped = Vec::new();
    let files = if meta.is_dir() {
        let real_dir = std::fs::canonicalize(&source)
            .map_err(|e| host_error(format!("artifact::put: cannot read '{path}': {e}")))?;
        let mut files = Vec::new();
        walk(&source, &real_dir, &base, &mut files, &mut skipped)
            .map_err(|e| host_error(format!("artifact::put: cannot read '{path}': {e}")))?;
        files
    } else {
        vec![SourceFile {
            source: source.clone(),
            name: base.clone(),
        }]
    };
    for skip in &skipped {
        ctx.log("warn", &format!("artifact::put: not stored: {skip}"));
    }

    state.with_store(ctx, |store| {
        let destinations = files
            .iter()
            .map(|file| store.destination(&file.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| host_error(format!("artifact::put: {why}")))?;
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
        let mut results: Vec<(String, u64, String)> = Vec::new();
        let outcome = ctx.effect(effect, |_event| {
            for (file, dest) in files.iter().zip(&destinations) {
                let mut input = File::open(&file.source).map_err(|e| {
                    host_error(format!(
                        "artifact::put: cannot read '{}': {e}",
                        file.source.display()
                    ))
                })?;
                let (size, sha256) =
                    write_atomic(dest, |out| copy_hashed(ctx, &mut input, Some(out)))?.map_err(
                        |e| {
                            host_error(format!(
                                "artifact::put: storing '{}' as {}: {e}",
                                file.source.display(),
                                dest.display()
                            ))
                        },
                    )?;
                stored(
                    ctx,
                    store,
                    &file.name,
                    size,
                    &sha256,
                    false,
                    Some(&file.source),
                )?;
                results.push((file.name.clone(), size, sha256));
            }
            Ok(())
        })?;
        let planned = matches!(outcome, Outcome::Planned);
        if planned {
            // The plan still says what would be stored: read the sources, write nothing.
            for file in &files {
                let mut input = File::open(&file.source).map_err(|e| {
                    host_error(format!(
                        "artifact::put: cannot read '{}': {e}",
                        file.source.display()
                    ))
                })?;
                let (size, sha256) = copy_hashed(ctx, &mut input, None)?.map_err(|e| {
                    host_error(format!(
                        "artifact::put: reading '{}': {e}",
                        file.source.display()
                    ))
                })?;
                stored(
                    ctx,
                    store,
                    &file.name,
                    size,
                    &sha256,
                    true,
                    Some(&file.source),
                )?;
                results.push((file.name.clone(), size, sha256));
            }
        }
        if !meta.is_dir() {
            let (name, size, sha256) = results.pop().unwrap_or_default();
            return Ok(result_map(&name, size, &sha256, planned));
        }
        // A directory: its hash is over `sha256  name` lines (what `sha256sum` prints).
        let listing: String = results
            .iter()
            .map(|(name, _, sha)| format!("{sha}  {name}\n"))
            .collect();
        let total = results.iter().map(|(_, size, _)| size).sum();
        let mut map = result_map(
            &base,
            total,
            &crate::config::sha256_hex(listing.as_bytes()),
            planned,
        );
        let files: Array = results
            .iter()
            .map(|(name, size, sha)| Dynamic::from(result_map(name, *size, sha, planned)))
            .collect();
        map.insert("files".into(), Dynamic::from(files));
        Ok(map)
    })
}

fn write(ctx: &HostContext, state: &Artifacts, name: &str, value: &Dynamic) -> HostResult<Map> {
    let name = clean_name(name).map_err(|why| host_error(format!("artifact::write: {why}")))?;
    // Text the host writes is redacted; a blob is the script's own bytes and is kept as is.
    let bytes: Vec<u8> = if value.is_blob() {
        value.clone().cast::<rhai::Blob>()
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
        let dest = store
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
        let outcome = ctx.effect(effect, |_event| {
            write_atomic(&dest, |file| Ok(file.write_all(&bytes)))?.map_err(|e| {
                host_error(format!("artifact::write: storing {}: {e}", dest.display()))
            })?;
            stored(ctx, store, &name, size, &sha256, false, None)
        })?;
        let planned = matches!(outcome, Outcome::Planned);
        if planned {
            stored(ctx, store, &name, size, &sha256, true, None)?;
        }
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
