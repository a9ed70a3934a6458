//! `glow-run verify RUN_DIR|BUNDLE|STORE|RUN_ID [--allowed-signers FILE]`: re-checks evidence
//! and names every problem as one `mismatch:` line (file, and seq for the journal).
//!
//! What is checked, by what the path holds:
//! - an artifact store (`manifest.json`): every listed file's size and SHA-256, no unlisted file;
//! - a run folder (`journal.jsonl`; a local `.glow/runs/ID` or `RUN_ID`): the journal
//!   (`verify/journal.rs`), its store as above (the one its `artifact` events name), the
//!   manifest's bytes against `run_end`'s `manifest_sha256`, and the manifest against the
//!   journal's `artifact` events;
//! - a bundle (`.tar.gz`, or unpacked): all of that on the bundled copies, no file that is not
//!   part of a bundle, and `attestation.json`: subjects against the files, the signature against
//!   `--allowed-signers` (without it a signature is reported, not trusted).

pub mod journal;
mod subjects;

use crate::attestation::signer::verifies;
use crate::attestation::{self, AllowedSigners, Envelope, FILE_NAME as ATTESTATION};
use crate::bundle::{Listed, hash_file, parse_manifest, store_root};
use crate::error::Error;
use crate::host::artifact::{MANIFEST, TEMP_PREFIX, clean_name};
use base64::Engine as _;
use journal::JournalCheck;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What verify found: lines that held (stdout) and findings (each a `mismatch:`).
#[derive(Debug, Default)]
pub struct Verified {
    pub lines: Vec<String>,
    pub findings: Vec<String>,
    /// The last line of a clean result.
    pub summary: String,
}

enum Layout {
    Store(PathBuf),
    Run { dir: PathBuf, bundle: bool },
}

/// A bundle's files at the run folder's level.
const BUNDLE_FILES: [&str; 4] = [
    journal::FILE,
    crate::report::FILE_NAME,
    ATTESTATION,
    "artifacts",
];

pub fn verify(target: &str, state_dir: &Path, allowed: Option<&Path>) -> Result<Verified, Error> {
    let allowed = allowed.map(AllowedSigners::read).transpose()?;
    let mut out = Verified::default();
    let path = PathBuf::from(target);
    let local_run = state_dir.join("runs").join(target);
    let unpacked;
    let dir = if !path.exists() && !target.contains('/') && local_run.join(journal::FILE).is_file()
    {
        local_run
    } else if path.is_file() {
        unpacked = unpack(&path)?;
        let dir = unpacked.path().to_owned();
        let run = locate(&dir, target)?;
        if let Layout::Run { dir: run_dir, .. } = &run {
            for extra in entries(&dir).into_iter().filter(|p| p != run_dir) {
                out.findings
                    .push(format!("{}: not part of a bundle", relative(&extra, &dir)));
            }
        }
        return finish(run, target, allowed.as_ref(), out);
    } else if path.is_dir() {
        path
    } else {
        return Err(Error::usage(format!(
            "{target} is neither a bundle, a folder nor a run id under {}",
            state_dir.join("runs").display()
        )));
    };
    let layout = locate(&dir, target)?;
    finish(layout, target, allowed.as_ref(), out)
}

fn finish(
    layout: Layout,
    target: &str,
    allowed: Option<&AllowedSigners>,
    mut out: Verified,
) -> Result<Verified, Error> {
    match layout {
        Layout::Store(store) => {
            let checked = check_store(&store, &mut out.findings);
            let count = checked.map_or(0, |c| c.entries.len());
            out.summary = format!(
                "ok: {count} artifact(s) in {target} match {MANIFEST} (an artifact store: no journal to check)"
            );
        }
        Layout::Run { dir, bundle } => check_run(&dir, bundle, target, allowed, &mut out),
    }
    Ok(out)
}

fn unpack(path: &Path) -> Result<tempfile::TempDir, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::host(format!("reading {}", path.display()), e))?;
    let unpacked = tempfile::tempdir().map_err(|e| Error::host("a temp directory", e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(unpacked.path())
        .map_err(|e| Error::Verify {
            problems: vec![format!(
                "{} is not a readable .tar.gz bundle: {e}",
                path.display()
            )],
        })?;
    Ok(unpacked)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    all.sort();
    all
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What a folder holds: a run folder, a store, or a folder holding one run folder.
fn locate(dir: &Path, target: &str) -> Result<Layout, Error> {
    if dir.join(journal::FILE).is_file() {
        let bundle =
            dir.join("artifacts").join(MANIFEST).is_file() || dir.join(ATTESTATION).is_file();
        return Ok(Layout::Run {
            dir: dir.to_owned(),
            bundle,
        });
    }
    if dir.join(MANIFEST).is_file() {
        return Ok(Layout::Store(dir.to_owned()));
    }
    if dir.join("artifacts").join(MANIFEST).is_file() {
        return Ok(Layout::Store(dir.join("artifacts")));
    }
    let children: Vec<PathBuf> = entries(dir).into_iter().filter(|p| p.is_dir()).collect();
    let runs: Vec<&PathBuf> = children
        .iter()
        .filter(|p| p.join(journal::FILE).is_file())
        .collect();
    match runs.as_slice() {
        [one] => return locate(one, target),
        [] => {}
        many => {
            return Err(Error::usage(format!(
                "{target} holds {} run folders; verify one of them",
                many.len()
            )));
        }
    }
    if let Some(store) = children
        .iter()
        .find(|p| p.join("artifacts").join(MANIFEST).is_file())
    {
        return Ok(Layout::Store(store.join("artifacts")));
    }
    Err(Error::Verify {
        problems: vec![format!(
            "{target}: no {} nor {MANIFEST} found (not a bundle, a run folder or a store)",
            journal::FILE
        )],
    })
}

/// The store as checked: its entries and the manifest's SHA-256.
struct StoreCheck {
    entries: Vec<Listed>,
    sha256: String,
    /// Artifacts already reported (so the attestation does not report them again).
    reported: BTreeSet<String>,
}

fn check_store(store: &Path, findings: &mut Vec<String>) -> Option<StoreCheck> {
    let manifest = store.join(MANIFEST);
    let bytes = match std::fs::read(&manifest) {
        Ok(bytes) => bytes,
        Err(e) => {
            findings.push(format!(
                "{MANIFEST}: cannot read {}: {e}",
                manifest.display()
            ));
            return None;
        }
    };
    let entries = match parse_manifest(&bytes) {
        Ok(entries) => entries,
        Err(why) => {
            findings.push(format!("{MANIFEST}: {why}"));
            return None;
        }
    };
    let mut reported = BTreeSet::new();
    let mut listed = BTreeSet::new();
    for entry in &entries {
        let name = match clean_name(&entry.name) {
            Ok(name) => name,
            Err(why) => {
                findings.push(format!("{MANIFEST}: lists a name outside the store: {why}"));
                continue;
            }
        };
        listed.insert(name.clone());
        if let Some(problem) = artifact_problem(&store.join(&name), entry) {
            findings.push(format!("{name}: {problem}"));
            reported.insert(name);
        }
    }
    let mut present = BTreeSet::new();
    files_under(store, "", &mut present);
    for extra in present.difference(&listed) {
        findings.push(format!("{extra}: not in the manifest"));
    }
    Some(StoreCheck {
        entries,
        sha256: hex::encode(Sha256::digest(&bytes)),
        reported,
    })
}

fn artifact_problem(file: &Path, entry: &Listed) -> Option<String> {
    match hash_file(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".into()),
        Err(e) => Some(format!("cannot read: {e}")),
        Ok((_, sha256)) if sha256 != entry.sha256 => Some(format!(
            "sha256 is {sha256}, the manifest says {}",
            entry.sha256
        )),
        Ok((size, _)) if entry.size.is_some_and(|expected| expected != size) => Some(format!(
            "size is {size}, the manifest says {}",
            entry.size.unwrap_or(0)
        )),
        Ok(_) => None,
    }
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

fn check_run(
    dir: &Path,
    bundle: bool,
    target: &str,
    allowed: Option<&AllowedSigners>,
    out: &mut Verified,
) {
    let run_id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let journal = match std::fs::read(dir.join(journal::FILE)) {
        Ok(bytes) => journal::check(&bytes, run_id.as_deref()),
        Err(e) => {
            out.findings
                .push(format!("{}: cannot read: {e}", journal::FILE));
            JournalCheck::default()
        }
    };
    out.lines
        .push(format!("{}: {}", journal::FILE, journal.summary()));
    out.findings.extend(journal.findings.iter().cloned());
    let store = if bundle {
        Some(dir.join("artifacts"))
    } else {
        store_root(&journal.events)
    };
    let checked = store
        .as_deref()
        .and_then(|s| check_store(s, &mut out.findings));
    check_manifest_against_journal(
        &journal,
        store.is_some(),
        checked.as_ref(),
        &mut out.findings,
    );
    let artifacts = checked.as_ref().map_or(0, |c| c.entries.len());
    out.lines.push(match &store {
        Some(_) if bundle => format!("{MANIFEST}: {artifacts} artifact(s)"),
        Some(store) => format!("{MANIFEST}: {artifacts} artifact(s) in {}", store.display()),
        None => format!("{MANIFEST}: none (the run stored no artifact)"),
    });
    let mut attested = String::new();
    if bundle {
        for extra in entries(dir) {
            let name = relative(&extra, dir);
            if !BUNDLE_FILES.contains(&name.as_str()) {
                out.findings.push(format!("{name}: not part of a bundle"));
            }
        }
        attested = format!(
            "; attestation {}",
            check_attestation(dir, &journal, checked.as_ref(), allowed, out)
        );
    }
    out.summary = format!(
        "ok: {artifacts} artifact(s) and {} journal event(s) verify in {target}{attested}",
        journal.events.len()
    );
}

/// `run_end`'s `manifest_sha256` against the manifest's bytes, and the journal's `artifact`
/// events against the manifest's entries.
fn check_manifest_against_journal(
    journal: &JournalCheck,
    has_store: bool,
    checked: Option<&StoreCheck>,
    findings: &mut Vec<String>,
) {
    if let Some(end) = &journal.run_end {
        let seq = &end["seq"];
        match (&end["manifest_sha256"], checked) {
            (Value::String(want), Some(store)) if *want != store.sha256 => findings.push(format!(
                "{MANIFEST}: sha256 is {}, run_end (seq {seq}) records {want} (changed after the run)",
                store.sha256
            )),
            (Value::String(want), None) if !has_store => findings.push(format!(
                "{MANIFEST}: missing, run_end (seq {seq}) records one with sha256 {want}"
            )),
            (Value::Null, Some(store)) if !store.entries.is_empty() => findings.push(format!(
                "{MANIFEST}: lists {} artifact(s), run_end (seq {seq}) records that the run stored none",
                store.entries.len()
            )),
            _ => {}
        }
    }
    let Some(store) = checked else { return };
    let mut stored: BTreeMap<&str, &Value> = BTreeMap::new();
    for event in &journal.events {
        if event["kind"] == "artifact"
            && event["planned"] != true
            && let Some(name) = event["name"].as_str()
        {
            stored.insert(name, event);
        }
    }
    for (name, event) in stored {
        let seq = &event["seq"];
        match store.entries.iter().find(|e| e.name == name) {
            None => findings.push(format!(
                "{MANIFEST}: does not list {name}, which journal seq {seq} stored"
            )),
            Some(entry) if event["sha256"].as_str() != Some(entry.sha256.as_str()) => findings
                .push(format!(
                    "{MANIFEST}: {name} has sha256 {}, journal seq {seq} stored {}",
                    entry.sha256, event["sha256"]
                )),
            Some(_) => {}
        }
    }
}

/// Subjects against the files, the signature against the allowed signers; returns how the
/// attestation is signed, for the summary.
fn check_attestation(
    dir: &Path,
    journal: &JournalCheck,
    store: Option<&StoreCheck>,
    allowed: Option<&AllowedSigners>,
    out: &mut Verified,
) -> String {
    let text = match std::fs::read(dir.join(ATTESTATION)) {
        Ok(text) => text,
        Err(_) if allowed.is_none() => return "none (a bundle made before attestations)".into(),
        Err(_) => {
            out.findings.push(format!(
                "{ATTESTATION}: missing, and --allowed-signers asks for a signed one"
            ));
            return "missing".into();
        }
    };
    let opened = serde_json::from_slice::<Envelope>(&text)
        .map_err(|e| format!("not a DSSE envelope: {e}"))
        .and_then(|envelope| {
            envelope
                .open()
                .map(|(payload, statement)| (envelope, payload, statement))
        });
    let (envelope, payload, statement) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            out.findings.push(format!("{ATTESTATION}: {why}"));
            return "unreadable".into();
        }
    };
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let invocation = &statement.predicate["runDetails"]["metadata"]["invocationId"];
    if invocation.as_str() != Some(run_id.as_str()) {
        out.findings.push(format!(
            "{ATTESTATION}: invocationId is {invocation}, the bundle holds run {run_id}"
        ));
    }
    subjects::check(dir, &statement.subject, journal, store, &mut out.findings);
    let signature = signature_status(&envelope, &payload, allowed, &mut out.findings);
    out.lines.push(format!(
        "{ATTESTATION}: {} subject(s), {signature}",
        statement.subject.len()
    ));
    if envelope.signatures.is_empty() {
        "unsigned".into()
    } else if allowed.is_some() {
        "signed by a trusted key".into()
    } else {
        "signed, not checked against allowed signers".into()
    }
}

fn signature_status(
    envelope: &Envelope,
    payload: &[u8],
    allowed: Option<&AllowedSigners>,
    findings: &mut Vec<String>,
) -> String {
    if envelope.signatures.is_empty() {
        if allowed.is_some() {
            findings.push(format!(
                "{ATTESTATION}: unsigned, and --allowed-signers asks for a signature"
            ));
        }
        return "unsigned".into();
    }
    let pae = attestation::pae(&envelope.payload_type, payload);
    let mut status = Vec::new();
    for signature in &envelope.signatures {
        let keyid = &signature.keyid;
        let Some(allowed) = allowed else {
            status.push(format!(
                "signed by {keyid} (not checked against allowed signers: pass --allowed-signers FILE)"
            ));
            continue;
        };
        let Some(signer) = allowed.by_fingerprint(keyid) else {
            findings.push(format!(
                "{ATTESTATION}: signed by {keyid}, a key {} does not list",
                allowed.path.display()
            ));
            status.push(format!("signed by {keyid} (not allowed)"));
            continue;
        };
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&signature.sig)
            .unwrap_or_default();
        if verifies(&signer.key, &pae, &sig) {
            status.push(format!(
                "signed by {keyid}, trusted: {} in {} line {}",
                signer.principals,
                allowed.path.display(),
                signer.line
            ));
        } else {
            findings.push(format!(
                "{ATTESTATION}: the signature by {keyid} does not verify (the envelope was changed or the signature replaced)"
            ));
            status.push(format!("signed by {keyid} (does not verify)"));
        }
    }
    status.join("; ")
}
