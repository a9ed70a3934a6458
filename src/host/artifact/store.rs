//! The artifact store of a run: where its root is (the `[artifacts] root` template), the names
//! it accepts (confined to the root), `manifest.json`, and the atomic write (temp file, fsync,
//! rename) every stored file goes through. `bundle` and `verify` read stores with the same
//! names and constants.

use crate::host::HostContext;
use crate::options::{HostResult, host_error};
use serde_json::{Value, json};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Temp files in the store start with this (verify and bundle ignore them).
pub const TEMP_PREFIX: &str = ".glow-tmp-";

pub use crate::journal::MANIFEST;

/// One stored (or, in a dry run, planned) artifact.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) step: Option<String>,
    pub(super) time: String,
    pub(super) planned: bool,
}

/// The store of one run, opened on first use.
pub(super) struct Store {
    /// Where the root is, as resolved from the template (relative to the working directory).
    pub(super) root: PathBuf,
    /// The root's real path, once it exists (live: created on open).
    pub(super) real: Option<PathBuf>,
    pub(super) entries: Vec<Entry>,
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

/// Reads a manifest's entries (none when the file does not exist).
pub(super) fn read_manifest(path: &Path) -> Result<Vec<Entry>, String> {
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
pub(super) fn confine(real_root: &Path, name: &str) -> Result<PathBuf, String> {
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

/// Writes `dest` atomically: a temp file beside it, filled, fsynced, renamed over the name.
pub(super) fn write_atomic<T>(
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
    /// Creates the root (the first write of a run does, inside its effect) and runs `then`.
    pub(super) fn create_then<T>(
        &mut self,
        then: impl FnOnce(&mut Self) -> HostResult<T>,
    ) -> HostResult<T> {
        if self.real.is_none() {
            std::fs::create_dir_all(&self.root).map_err(|e| {
                host_error(format!(
                    "artifact store: cannot create {}: {e}",
                    self.root.display()
                ))
            })?;
            self.real = std::fs::canonicalize(&self.root).ok();
        }
        then(self)
    }

    /// Where each file of a `put` goes, after the confinement checks.
    pub(super) fn destinations(&self, files: &[super::SourceFile]) -> HostResult<Vec<PathBuf>> {
        files
            .iter()
            .map(|file| self.destination(&file.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| host_error(format!("artifact::put: {why}")))
    }

    /// The real path `name` will be stored at, after the confinement checks.
    pub(super) fn destination(&self, name: &str) -> Result<PathBuf, String> {
        match &self.real {
            Some(real) => confine(real, name),
            // The root does not exist yet: nothing there to escape through.
            None => Ok(self.root.join(name)),
        }
    }

    pub(super) fn record(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Rewrites `manifest.json` atomically from the stored (not planned) entries.
    pub(super) fn write_manifest(&self) -> Result<(), String> {
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
