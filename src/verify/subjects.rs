//! The attestation's subjects against the bundle's files, and every bundled file against
//! the subjects. The journal's subject says which end of it changed (its annotations).

use super::StoreCheck;
use super::journal::JournalCheck;
use crate::attestation::{JOURNAL, Resource};
use crate::bundle::hash_file;
use crate::host::artifact::clean_name;
use std::path::Path;

const ATTESTATION: &str = crate::attestation::FILE_NAME;

pub(super) fn check(
    dir: &Path,
    subjects: &[Resource],
    journal: &JournalCheck,
    store: Option<&StoreCheck>,
    findings: &mut Vec<String>,
) {
    for subject in subjects {
        let name = &subject.name;
        let want = subject.sha256_digest().unwrap_or_default();
        if name == JOURNAL {
            if journal.sha256 != want {
                journal_differs(subject, journal, findings);
            }
            continue;
        }
        let artifact = name.strip_prefix("artifacts/");
        if artifact.is_some_and(|a| store.is_some_and(|s| s.reported.contains(a))) {
            continue; // already reported against the manifest
        }
        if clean_name(name).is_err() {
            findings.push(format!(
                "{ATTESTATION}: subject {name} is outside the bundle"
            ));
            continue;
        }
        match hash_file(&dir.join(name)) {
            Err(_) => findings.push(format!("{name}: missing (an attestation subject)")),
            Ok((_, sha256)) if sha256 != want => findings.push(format!(
                "{name}: sha256 is {sha256}, the attestation says {want}"
            )),
            Ok(_) => {}
        }
    }
    let mut expected = vec![JOURNAL.to_owned()];
    if dir.join(crate::report::FILE_NAME).is_file() {
        expected.push(crate::report::FILE_NAME.to_owned());
    }
    for entry in store.map(|s| s.entries.as_slice()).unwrap_or_default() {
        expected.push(format!("artifacts/{}", entry.name));
    }
    for name in expected {
        if !subjects.iter().any(|s| s.name == name) {
            findings.push(format!("{name}: not among the attestation's subjects"));
        }
    }
}

/// Says which end of the journal differs from the one the attestation signed (its subject
/// is annotated with the last seq and that line's hash).
fn journal_differs(subject: &Resource, journal: &JournalCheck, findings: &mut Vec<String>) {
    let file = JOURNAL;
    let annotations = subject.annotations.clone().unwrap_or_default();
    let signed_last = annotations["last_seq"].as_u64();
    let signed_line = annotations["last_line_sha256"].as_str();
    match (journal.last_seq, signed_last) {
        (Some(last), Some(signed)) if last < signed => findings.push(format!(
            "{file}: ends at seq {last}, the attestation signed it ending at seq {signed} (lines removed)"
        )),
        (Some(last), Some(signed)) if last > signed => findings.push(format!(
            "{file}: seq {}..{last} were added after the attestation signed seq 1..{signed}",
            signed + 1
        )),
        (Some(last), Some(_)) if journal.last_line_sha256.as_deref() != signed_line => {
            findings.push(format!(
                "{file}: seq {last}: the last line differs from the one the attestation signed"
            ))
        }
        // The chain findings already say where it changed.
        _ if !journal.findings.is_empty() => {}
        _ => findings.push(format!(
            "{file}: sha256 is {}, the attestation says {}",
            journal.sha256,
            subject.sha256_digest().unwrap_or_default()
        )),
    }
}
