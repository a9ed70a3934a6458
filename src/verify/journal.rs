//! The journal's own evidence: every line parses, `seq` runs 1, 2, 3... in file order, each
//! event's `prev` is the SHA-256 of the line before it (the first's, of the run id), and the
//! run ended (`run_end`). Used by `verify` and by `show`.
//!
//! The chain is followed by `seq`, not by position, so one deleted or swapped line is one
//! finding (a gap, an order) rather than a cascade of broken links; a line changed in place
//! breaks exactly one link, which names it. The last line has no successor: it is pinned by
//! the bundle's attestation.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const FILE: &str = "journal.jsonl";

struct Line {
    number: usize,
    sha256: String,
    event: Option<Value>,
    seq: Option<u64>,
}

/// What the journal showed.
#[derive(Debug, Default)]
pub struct JournalCheck {
    /// Parsed events, in file order.
    pub events: Vec<Value>,
    /// Lines in the file.
    pub lines: usize,
    /// `seq` of the last parsed line.
    pub last_seq: Option<u64>,
    /// SHA-256 of the last line's bytes.
    pub last_line_sha256: Option<String>,
    /// The links of seq 1..=this all hold.
    pub holds_through: u64,
    pub run_end: Option<Value>,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// One per problem, each starting `journal.jsonl: `.
    pub findings: Vec<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Splits the file into lines; the flag says whether the last one lacks its newline.
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    match bytes.split_last() {
        None => (Vec::new(), false),
        Some((b'\n', body)) => (body.split(|b| *b == b'\n').collect(), false),
        Some(_) => (bytes.split(|b| *b == b'\n').collect(), true),
    }
}

/// Checks a journal's bytes; `run_id` is the run the journal belongs to (its folder's name),
/// else the first event's `run`.
pub fn check(bytes: &[u8], run_id: Option<&str>) -> JournalCheck {
    let mut out = JournalCheck {
        sha256: sha256_hex(bytes),
        ..JournalCheck::default()
    };
    let (raw, torn) = split_lines(bytes);
    let mut lines = Vec::with_capacity(raw.len());
    for (index, raw) in raw.iter().enumerate() {
        let number = index + 1;
        let event = match serde_json::from_slice::<Value>(raw) {
            Ok(event) if event.is_object() => Some(event),
            Ok(_) => {
                out.findings
                    .push(format!("{FILE}: line {number}: not a JSON object"));
                None
            }
            Err(_) if torn && number == raw.len() => {
                out.findings.push(format!(
                    "{FILE}: line {number}: torn last line (cut off while it was written)"
                ));
                None
            }
            Err(e) => {
                out.findings
                    .push(format!("{FILE}: line {number}: not a JSON event ({e})"));
                None
            }
        };
        let seq = event.as_ref().and_then(|e| e["seq"].as_u64());
        lines.push(Line {
            number,
            sha256: sha256_hex(raw),
            event,
            seq,
        });
    }
    out.lines = lines.len();
    out.last_line_sha256 = lines.last().map(|l| l.sha256.clone());
    out.last_seq = lines.iter().rev().find_map(|l| l.seq);
    out.events = lines.iter().filter_map(|l| l.event.clone()).collect();
    let run_id = run_id
        .map(str::to_owned)
        .or_else(|| {
            out.events
                .first()
                .and_then(|e| e["run"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    check_order(&lines, &mut out.findings);
    check_chain(&lines, &run_id, &mut out);
    check_end(&mut out);
    out
}

/// `seq` must run 1, 2, 3... in file order: names a missing, swapped or repeated line.
fn check_order(lines: &[Line], findings: &mut Vec<String>) {
    let mut expected = 1u64;
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let Some(seq) = line.seq else {
            if line.event.is_some() {
                findings.push(format!("{FILE}: line {}: no seq", line.number));
            }
            expected += 1;
            i += 1;
            continue;
        };
        let next = lines.get(i + 1).and_then(|l| l.seq);
        if seq == expected {
            expected += 1;
        } else if seq == expected + 1 && next == Some(expected) {
            findings.push(format!(
                "{FILE}: seq {expected} and seq {seq} are out of order (lines {} and {})",
                line.number,
                line.number + 1
            ));
            expected += 2;
            i += 2;
            continue;
        } else if seq > expected {
            let missing = if seq == expected + 1 {
                format!("seq {expected} is missing")
            } else {
                format!("seq {expected}..{} are missing", seq - 1)
            };
            findings.push(format!(
                "{FILE}: {missing} (line {} has seq {seq})",
                line.number
            ));
            expected = seq + 1;
        } else {
            findings.push(format!(
                "{FILE}: line {}: seq {seq} is out of place (seq {expected} was expected)",
                line.number
            ));
        }
        i += 1;
    }
}

/// Each event's `prev` against the line with the seq before it (the run id for seq 1).
fn check_chain(lines: &[Line], run_id: &str, out: &mut JournalCheck) {
    let mut by_seq: HashMap<u64, &Line> = HashMap::new();
    for line in lines {
        if let Some(seq) = line.seq {
            by_seq.entry(seq).or_insert(line);
        }
    }
    let genesis = sha256_hex(run_id.as_bytes());
    let expected_prev = |seq: u64| -> Option<&str> {
        if seq == 1 {
            Some(genesis.as_str())
        } else {
            by_seq.get(&(seq - 1)).map(|l| l.sha256.as_str())
        }
    };
    let with_prev = lines
        .iter()
        .filter(|l| l.event.as_ref().is_some_and(|e| e.get("prev").is_some()))
        .count();
    if with_prev == 0 && !lines.is_empty() {
        out.findings.push(format!(
            "{FILE}: no hash chain (no event has `prev`: written by an older glow-run)"
        ));
        return;
    }
    for (seq, line) in sorted(&by_seq) {
        let event = line.event.as_ref().expect("lines with a seq parsed");
        if event["run"].as_str() != Some(run_id) {
            out.findings.push(format!(
                "{FILE}: seq {seq}: run is {}, not {run_id}",
                event["run"]
            ));
        }
        let Some(prev) = event["prev"].as_str() else {
            out.findings.push(format!("{FILE}: seq {seq}: no prev"));
            continue;
        };
        match expected_prev(seq) {
            Some(want) if want == prev => {}
            Some(_) if seq == 1 => out.findings.push(format!(
                "{FILE}: seq 1: prev {} is not the SHA-256 of the run id {run_id}",
                short(prev)
            )),
            Some(want) => out.findings.push(format!(
                "{FILE}: seq {}: changed after it was written (the line hashes to {}, seq {seq} records prev {})",
                seq - 1,
                short(want),
                short(prev)
            )),
            None => {} // the line before is missing: check_order named it
        }
    }
    let mut through = 0;
    while let Some(line) = by_seq.get(&(through + 1)) {
        let prev = line.event.as_ref().and_then(|e| e["prev"].as_str());
        if prev.is_none() || prev != expected_prev(through + 1) {
            break;
        }
        through += 1;
    }
    out.holds_through = through;
}

fn sorted<'a>(by_seq: &HashMap<u64, &'a Line>) -> Vec<(u64, &'a Line)> {
    let mut all: Vec<(u64, &Line)> = by_seq.iter().map(|(s, l)| (*s, *l)).collect();
    all.sort_by_key(|(seq, _)| *seq);
    all
}

/// The run must have ended, and nothing may follow its end.
fn check_end(out: &mut JournalCheck) {
    let end = out.events.iter().position(|e| e["kind"] == "run_end");
    match end {
        None => out.findings.push(format!(
            "{FILE}: incomplete: ends at seq {} with no run_end (the run was killed, or is still running)",
            out.last_seq.unwrap_or(0)
        )),
        Some(index) => {
            let end_seq = out.events[index]["seq"].as_u64().unwrap_or(0);
            if let Some(after) = out.events.get(index + 1) {
                out.findings.push(format!(
                    "{FILE}: seq {}: follows run_end (seq {end_seq})",
                    after["seq"]
                ));
            }
            out.run_end = Some(out.events[index].clone());
        }
    }
}

impl JournalCheck {
    /// One line: how far the chain holds and how the journal ends.
    pub fn summary(&self) -> String {
        let events = self.events.len();
        let ending = match (&self.run_end, self.last_seq) {
            (Some(end), _) => format!(
                "ends with run_end (outcome {})",
                end["outcome"].as_str().unwrap_or("?")
            ),
            (None, last) => format!(
                "incomplete: ends at seq {} with no run_end",
                last.unwrap_or(0)
            ),
        };
        let chain = if Some(self.holds_through) == self.last_seq && self.lines == events {
            format!("chain holds through seq {}", self.holds_through)
        } else {
            format!(
                "chain holds through seq {} only (of {} line(s))",
                self.holds_through, self.lines
            )
        };
        format!("{events} event(s), {chain}, {ending}")
    }
}
