//! Evidence bundles: `glow-run bundle RUN_ID -o FILE.tar.gz` packs a run's journal, report,
//! artifact manifest and artifacts into one archive (tar + gzip) for a change ticket, and
//! `glow-run verify FILE.tar.gz|DIR` re-hashes every artifact against the manifest.
//!
//! Layout inside the archive: `RUN_ID/journal.jsonl`, `RUN_ID/report.md`,
//! `RUN_ID/artifacts/manifest.json` and `RUN_ID/artifacts/<name>` for every manifest entry.
//! Verify accepts that layout, an unpacked copy of it, or an artifact store itself.

use crate::error::Error;
use crate::event::{Body, Event};
use crate::host::artifact::{MANIFEST, TEMP_PREFIX, clean_name};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One manifest entry as verify needs it.
struct Listed {
    name: String,
    size: Option<u64>,
    sha256: String,
}

fn read_manifest(path: &Path) -> Result<Vec<Listed>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let items = value["artifacts"]
        .as_array()
        .ok_or_else(|| format!("{} has no \"artifacts\" list", path.display()))?;
    Ok(items
        .iter()
        .map(|item| Listed {
            name: item["name"].as_str().unwrap_or_default().to_owned(),
            size: item["size"].as_u64(),
            sha256: item["sha256"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// The store root a run wrote to, from its journal's artifact events.
fn store_root(events: &[Event]) -> Option<PathBuf> {
    events.iter().find_map(|event| match &event.body {
        Body::Artifact(artifact) if !artifact.planned => Some(PathBuf::from(&artifact.root)),
        _ => None,
    })
}

/// Writes the bundle for the run whose journal is `journal`; returns a one-line summary.
pub fn bundle(journal: &Path, output: &Path) -> Result<String, Error> {
    let run_dir = journal.parent().unwrap_or(Path::new("."));
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let events = crate::journal::read_events(journal)
        .map_err(|e| Error::host(format!("reading {}", journal.display()), e))?;
    let root = store_root(&events);
    let entries = match &root {
        Some(root) => {
            read_manifest(&root.join(MANIFEST)).map_err(|why| Error::host("bundle", why))?
        }
        None => Vec::new(),
    };
    for entry in &entries {
        clean_name(&entry.name)
            .map_err(|why| Error::host("bundle: the manifest is not trustworthy", why))?;
        if let Some(root) = &root
            && !root.join(&entry.name).is_file()
        {
            return Err(Error::host(
                "bundle",
                format!(
                    "artifact '{}' is listed in {} but missing; run `glow-run verify {}`",
                    entry.name,
                    root.join(MANIFEST).display(),
                    root.display()
                ),
            ));
        }
    }

    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let write = || -> std::io::Result<()> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            // Evidence is meant to be read (umask still applies); tempfile's default is 0600.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)?;
        let encoder = GzEncoder::new(temp.reopen()?, Compression::default());
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.append_path_with_name(journal, format!("{run_id}/journal.jsonl"))?;
        let report = run_dir.join("report.md");
        if report.is_file() {
            tar.append_path_with_name(&report, format!("{run_id}/report.md"))?;
        }
        match &root {
            Some(root) => {
                tar.append_path_with_name(
                    root.join(MANIFEST),
                    format!("{run_id}/artifacts/{MANIFEST}"),
                )?;
                for entry in &entries {
                    tar.append_path_with_name(
                        root.join(&entry.name),
                        format!("{run_id}/artifacts/{}", entry.name),
                    )?;
                }
            }
            None => {
                let empty = b"{\n  \"artifacts\": []\n}\n";
                let mut header = tar::Header::new_gnu();
                header.set_size(empty.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(
                    &mut header,
                    format!("{run_id}/artifacts/{MANIFEST}"),
                    &empty[..],
                )?;
            }
        }
        tar.into_inner()?.finish()?.sync_all()?;
        temp.persist(output).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| Error::host(format!("writing the bundle {}", output.display()), e))?;
    Ok(format!(
        "bundle {}: journal, report, manifest and {} artifact(s) of run {run_id}",
        output.display(),
        entries.len()
    ))
}

/// Finds the manifest in a store, an unpacked bundle, or a folder holding one bundle.
fn find_manifest(dir: &Path) -> Option<PathBuf> {
    let direct = [dir.join(MANIFEST), dir.join("artifacts").join(MANIFEST)];
    if let Some(found) = direct.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    children.sort();
    children
        .into_iter()
        .map(|child| child.join("artifacts").join(MANIFEST))
        .find(|p| p.is_file())
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Files under `dir` (relative names), except the manifest and temp files.
fn files_under(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => files_under(&entry.path(), &relative, out),
            Ok(_) if relative == MANIFEST || name.starts_with(TEMP_PREFIX) => {}
            Ok(_) => {
                out.insert(relative);
            }
            Err(_) => {}
        }
    }
}

/// Re-hashes every artifact against the manifest; `Error::Verify` names each problem.
pub fn verify(path: &Path) -> Result<String, Error> {
    let unpacked;
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        let file =
            File::open(path).map_err(|e| Error::host(format!("reading {}", path.display()), e))?;
        unpacked = tempfile::tempdir().map_err(|e| Error::host("a temp directory", e))?;
        tar::Archive::new(GzDecoder::new(file))
            .unpack(unpacked.path())
            .map_err(|e| Error::Verify {
                problems: vec![format!(
                    "{} is not a readable .tar.gz bundle: {e}",
                    path.display()
                )],
            })?;
        unpacked.path().to_owned()
    };
    let manifest = find_manifest(&dir).ok_or_else(|| Error::Verify {
        problems: vec![format!("no {MANIFEST} found in {}", path.display())],
    })?;
    let store = manifest.parent().unwrap_or(&dir).to_owned();
    let entries = read_manifest(&manifest).map_err(|why| Error::Verify {
        problems: vec![why],
    })?;

    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for entry in &entries {
        let name = match clean_name(&entry.name) {
            Ok(name) => name,
            Err(why) => {
                problems.push(format!(
                    "the manifest lists a name outside the store: {why}"
                ));
                continue;
            }
        };
        listed.insert(name.clone());
        let file = store.join(&name);
        match hash_file(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{name}: missing"))
            }
            Err(e) => problems.push(format!("{name}: cannot read: {e}")),
            Ok((size, sha256)) => {
                if sha256 != entry.sha256 {
                    problems.push(format!(
                        "{name}: sha256 is {sha256}, the manifest says {}",
                        entry.sha256
                    ));
                } else if entry.size.is_some_and(|expected| expected != size) {
                    problems.push(format!(
                        "{name}: size is {size}, the manifest says {}",
                        entry.size.unwrap_or(0)
                    ));
                }
            }
        }
    }
    let mut present = BTreeSet::new();
    files_under(&store, "", &mut present);
    for extra in present.difference(&listed) {
        problems.push(format!("{extra}: not in the manifest"));
    }
    if !problems.is_empty() {
        return Err(Error::Verify { problems });
    }
    Ok(format!(
        "ok: {} artifact(s) in {} match {MANIFEST}",
        entries.len(),
        path.display()
    ))
}
