//! Evidence bundles: `glow-run bundle RUN_ID -o FILE.tar.gz [--sign KEY]` packs a run's
//! journal, report, artifact manifest, artifacts and an attestation (`attestation.rs`) into one
//! archive (tar + gzip) for a change ticket; `glow-run verify` (`verify.rs`) re-checks it.
//!
//! Layout inside the archive: `RUN_ID/journal.jsonl`, `RUN_ID/report.md`,
//! `RUN_ID/artifacts/manifest.json`, `RUN_ID/artifacts/<name>` for every manifest entry, and
//! `RUN_ID/attestation.json` last. Each file is read once: the bytes that are hashed for the
//! attestation are the bytes that go into the archive, and an artifact whose bytes no longer
//! match the manifest is refused rather than attested.

use crate::attestation::{self, JOURNAL, Resource, Signer, Statement};
use crate::error::Error;
use crate::host::artifact::{MANIFEST, TEMP_PREFIX, clean_name};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One manifest entry as bundle and verify need it.
pub struct Listed {
    pub name: String,
    pub size: Option<u64>,
    pub sha256: String,
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<Listed>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let items = value["artifacts"]
        .as_array()
        .ok_or_else(|| "has no \"artifacts\" list".to_owned())?;
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
/// (Verify reads a journal as raw, untrusted JSON lines, not as typed events.)
pub fn store_root(events: &[Value]) -> Option<PathBuf> {
    events.iter().find_map(|event| {
        let artifact = crate::event::Event::parse(&event.to_string())?;
        match artifact.body {
            crate::event::Body::Artifact(a) if !a.planned => Some(PathBuf::from(a.root)),
            _ => None,
        }
    })
}

/// Size and SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
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

/// What goes into the archive, read before anything is written.
struct Contents {
    run_id: String,
    journal: Vec<u8>,
    /// The journal's events, for the attestation.
    typed: Vec<crate::event::Event>,
    report: Option<Vec<u8>>,
    manifest: Vec<u8>,
    entries: Vec<Listed>,
    root: Option<PathBuf>,
}

fn read_contents(journal: &Path) -> Result<Contents, Error> {
    let run_dir = journal.parent().unwrap_or(Path::new("."));
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(journal)
        .map_err(|e| Error::host(format!("reading {}", journal.display()), e))?;
    let events: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let typed = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let report = std::fs::read(run_dir.join(crate::report::FILE_NAME)).ok();
    let root = store_root(&events);
    let manifest = match &root {
        Some(root) => std::fs::read(root.join(MANIFEST)).map_err(|e| {
            Error::host(
                "bundle",
                format!("cannot read {}: {e}", root.join(MANIFEST).display()),
            )
        })?,
        None => b"{\n  \"artifacts\": []\n}\n".to_vec(),
    };
    let entries =
        parse_manifest(&manifest).map_err(|why| Error::host("bundle: the manifest", why))?;
    for entry in &entries {
        clean_name(&entry.name)
            .map_err(|why| Error::host("bundle: the manifest is not trustworthy", why))?;
    }
    Ok(Contents {
        run_id,
        journal: bytes,
        typed,
        report,
        manifest,
        entries,
        root,
    })
}

/// Writes the bundle for the run whose journal is `journal`; returns a one-line summary.
pub fn bundle(journal: &Path, output: &Path, signer: Option<&Signer>) -> Result<String, Error> {
    let contents = read_contents(journal)?;
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        // Evidence is meant to be read (umask still applies); tempfile's default is 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(|e| Error::host(format!("writing the bundle {}", output.display()), e))?;
    let writing =
        |e: std::io::Error| Error::host(format!("writing the bundle {}", output.display()), e);
    let encoder = GzEncoder::new(temp.reopen().map_err(writing)?, Compression::default());
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    let id = &contents.run_id;
    let mut subjects = vec![journal_subject(&contents.journal)];
    append_bytes(&mut tar, &format!("{id}/{JOURNAL}"), &contents.journal).map_err(writing)?;
    if let Some(report) = &contents.report {
        let name = crate::report::FILE_NAME;
        append_bytes(&mut tar, &format!("{id}/{name}"), report).map_err(writing)?;
        subjects.push(Resource::sha256(name, hex::encode(Sha256::digest(report))));
    }
    append_bytes(
        &mut tar,
        &format!("{id}/artifacts/{MANIFEST}"),
        &contents.manifest,
    )
    .map_err(writing)?;
    if let Some(root) = &contents.root {
        for entry in &contents.entries {
            let sha256 = append_artifact(&mut tar, id, root, entry)?;
            subjects.push(Resource::sha256(
                format!("artifacts/{}", entry.name),
                sha256,
            ));
        }
    }
    let statement = Statement {
        statement_type: attestation::STATEMENT_TYPE.to_owned(),
        subject: subjects,
        predicate_type: attestation::PREDICATE_TYPE.to_owned(),
        predicate: attestation::provenance(id, &contents.typed),
    };
    let envelope = attestation::envelope(&statement, signer)
        .map_err(|why| Error::host("bundle: the attestation", why))?;
    let mut text = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
    text.push(b'\n');
    append_bytes(&mut tar, &format!("{id}/{}", attestation::FILE_NAME), &text).map_err(writing)?;
    let finish = || -> std::io::Result<()> {
        tar.into_inner()?.finish()?.sync_all()?;
        temp.persist(output).map_err(|e| e.error)?;
        Ok(())
    };
    finish().map_err(writing)?;
    Ok(format!(
        "bundle {}: journal, report, manifest, {} artifact(s) and attestation ({}) of run {id}",
        output.display(),
        contents.entries.len(),
        signer.map_or_else(
            || "unsigned".to_owned(),
            |s| format!("signed by {}", s.keyid)
        )
    ))
}

/// The journal's subject, annotated with its last seq and that line's hash (see attestation.rs).
fn journal_subject(journal: &[u8]) -> Resource {
    let mut subject = Resource::sha256(JOURNAL, hex::encode(Sha256::digest(journal)));
    let body = journal.strip_suffix(b"\n").unwrap_or(journal);
    if let Some(last) = body
        .rsplit(|b| *b == b'\n')
        .next()
        .filter(|l| !l.is_empty())
    {
        let seq = serde_json::from_slice::<Value>(last)
            .ok()
            .and_then(|e| e["seq"].as_u64());
        subject.annotations = Some(json!({
            "last_seq": seq,
            "last_line_sha256": hex::encode(Sha256::digest(last)),
        }));
    }
    subject
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes(
    tar: &mut tar::Builder<GzEncoder<File>>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    tar.append_data(&mut header(bytes.len() as u64), name, bytes)
}

/// Appends one artifact, hashing the bytes as they go in; refuses one that no longer matches
/// the manifest.
fn append_artifact(
    tar: &mut tar::Builder<GzEncoder<File>>,
    id: &str,
    root: &Path,
    entry: &Listed,
) -> Result<String, Error> {
    let path = root.join(&entry.name);
    let changed = |what: String| {
        Error::host(
            "bundle",
            format!(
                "artifact '{}' {what}; run `glow-run verify {}`",
                entry.name,
                root.display()
            ),
        )
    };
    let mut file = File::open(&path).map_err(|_| {
        changed(format!(
            "is listed in {} but missing",
            root.join(MANIFEST).display()
        ))
    })?;
    let size = file
        .metadata()
        .map_err(|e| Error::host(format!("reading {}", path.display()), e))?
        .len();
    let mut hashing = HashingReader {
        inner: &mut file,
        hasher: Sha256::new(),
    };
    tar.append_data(
        &mut header(size),
        format!("{id}/artifacts/{}", entry.name),
        &mut hashing,
    )
    .map_err(|e| Error::host(format!("bundling {}", path.display()), e))?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    if sha256 != entry.sha256 {
        return Err(changed(format!(
            "has sha256 {sha256}, the manifest says {}",
            entry.sha256
        )));
    }
    Ok(sha256)
}

struct HashingReader<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
