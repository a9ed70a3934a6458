//! Tamper evidence: the journal's hash chain, `verify` naming each kind of tampering with its
//! file and seq, a killed run verifying as incomplete, and the signed in-toto/SLSA attestation
//! accepted by an independent DSSE verifier (Python securesystemslib, installed by `.ci/run`
//! into `target/venv`).

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CANARY: &str = "canary-5e1f0a7c93d2";

/// Runs glow-run in `dir`; returns (status, stdout, stderr).
fn glow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = wait_with_timeout(
        command.spawn().expect("spawn glow-run"),
        Duration::from_secs(120),
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An ed25519 key pair made by OpenSSH (`NAME`, `NAME.pub`); returns its `SHA256:` fingerprint.
fn keygen(dir: &Path, name: &str, passphrase: &str) -> String {
    run(
        dir,
        "ssh-keygen",
        &[
            "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", name,
        ],
    );
    let listing = run(dir, "ssh-keygen", &["-l", "-f", &format!("{name}.pub")]);
    listing
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}

fn sha256sum(path: &Path) -> String {
    run(Path::new("."), "sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn mismatches(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("mismatch: "))
        .collect()
}

/// A finished live run with artifacts and an imported module, bundled and signed.
struct Evidence {
    _keep: tempfile::TempDir,
    dir: PathBuf,
    id: String,
    fingerprint: String,
}

fn signed_bundle() -> Evidence {
    let (keep, _out) = Test::new()
        .file("a.txt", "alpha\n")
        .file("lib/helpers.rhai", "fn greet(name) { `hello ${name}` }\n")
        .script(
            r#"
            import "lib/helpers" as h;
            step("evidence", || {
                let token = env::secret("DEPLOY_TOKEN");
                artifact::put("a.txt");
                artifact::write("notes.txt", `token is ${token}`);
                log::info(h::greet(token));
            });
            step("finish", || { artifact::write("summary.json", #{ ok: true }); });
            "#,
        )
        .env("DEPLOY_TOKEN", CANARY)
        .args(&["--var", "tag=v1.2.3"])
        .expect(0);
    let dir = keep.path().to_owned();
    let id = std::fs::read_dir(dir.join(".glow/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let fingerprint = keygen(&dir, "release-key", "");
    let public = std::fs::read_to_string(dir.join("release-key.pub")).unwrap();
    std::fs::write(
        dir.join("allowed_signers"),
        format!("release@example.com {public}"),
    )
    .unwrap();
    let (status, _, stderr) = glow(
        &dir,
        &[
            "bundle",
            &id,
            "-o",
            "evidence.tar.gz",
            "--sign",
            "release-key",
        ],
        &[],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("signed by {fingerprint}")),
        "{stderr}"
    );
    Evidence {
        _keep: keep,
        dir,
        id,
        fingerprint,
    }
}

impl Evidence {
    /// Unpacks the bundle into a fresh folder; returns the run folder in it.
    fn unpack(&self, name: &str) -> PathBuf {
        let target = self.dir.join(name);
        std::fs::create_dir(&target).unwrap();
        run(&target, "tar", &["xzf", "../evidence.tar.gz"]);
        target.join(&self.id)
    }

    fn verify(&self, target: &Path) -> (i32, String, String) {
        glow(
            &self.dir,
            &[
                "verify",
                target.to_str().unwrap(),
                "--allowed-signers",
                "allowed_signers",
            ],
            &[],
        )
    }
}

fn lines(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(run: &Path, lines: &[String]) {
    std::fs::write(run.join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// Changes one byte of a journal line (a digit of its time) so it still parses.
fn change_one_byte(line: &str) -> String {
    let at = line.find("Z\"").expect("a time field") - 1;
    let mut bytes = line.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    String::from_utf8(bytes).unwrap()
}

/// Asserts exit 1 and exactly the expected mismatch lines (each a prefix).
fn assert_findings(result: &(i32, String, String), expected: &[&str]) {
    let (status, stdout, stderr) = result;
    assert_eq!(*status, 1, "--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let found = mismatches(stderr);
    assert_eq!(found.len(), expected.len(), "{stderr}");
    for want in expected {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "no `{want}` in\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!(
            "error: verification failed: {} problem(s)",
            expected.len()
        )),
        "{stderr}"
    );
}

#[test]
fn an_untouched_bundle_verifies_with_its_signature_trusted() {
    let evidence = signed_bundle();
    let (status, stdout, stderr) = evidence.verify(Path::new("evidence.tar.gz"));
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    let events = lines(&evidence.dir.join(".glow/runs").join(&evidence.id)).len();
    assert!(
        stdout.contains(&format!(
            "chain holds through seq {events}, ends with run_end"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "signed by {}, trusted: release@example.com",
            evidence.fingerprint
        )),
        "{stdout}"
    );
    assert!(stdout.contains("ok: 3 artifact(s)"), "{stdout}");
    assert!(mismatches(&stderr).is_empty(), "{stderr}");
    // The unpacked copy, and the local run by id, verify too.
    let run_dir = evidence.unpack("unpacked");
    assert_eq!(evidence.verify(&run_dir).0, 0);
    let (status, stdout, stderr) = glow(&evidence.dir, &["verify", &evidence.id], &[]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("ok: 3 artifact(s)"), "{stdout}");
    // Without allowed signers the signature is named but not called trusted.
    let (status, stdout, _) = glow(&evidence.dir, &["verify", "evidence.tar.gz"], &[]);
    assert_eq!(status, 0);
    assert!(
        stdout.contains("not checked against allowed signers"),
        "{stdout}"
    );
}

#[test]
fn a_changed_artifact_byte_is_named() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    std::fs::write(run_dir.join("artifacts/a.txt"), "alphA\n").unwrap();
    assert_findings(&evidence.verify(&run_dir), &["mismatch: a.txt: sha256 is"]);
}

#[test]
fn a_changed_manifest_byte_is_named() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let manifest = run_dir.join("artifacts/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, change_one_byte(&text)).unwrap();
    let end = seq_of(lines(&run_dir).last().unwrap());
    assert_findings(
        &evidence.verify(&run_dir),
        &["mismatch: manifest.json: sha256 is"],
    );
    let (_, _, stderr) = evidence.verify(&run_dir);
    assert!(
        stderr.contains(&format!("run_end (seq {end}) records")),
        "{stderr}"
    );
}

#[test]
fn a_changed_journal_line_in_the_middle_names_its_seq() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let mut journal = lines(&run_dir);
    let middle = journal.len() / 2;
    let seq = seq_of(&journal[middle]);
    journal[middle] = change_one_byte(&journal[middle]);
    write_lines(&run_dir, &journal);
    assert_findings(
        &evidence.verify(&run_dir),
        &[&format!(
            "mismatch: journal.jsonl: seq {seq}: changed after it was written"
        )],
    );
}

#[test]
fn a_changed_last_journal_line_is_named_through_the_attestation() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let mut journal = lines(&run_dir);
    let last = journal.len() - 1;
    let seq = seq_of(&journal[last]);
    journal[last] = change_one_byte(&journal[last]);
    write_lines(&run_dir, &journal);
    assert_findings(
        &evidence.verify(&run_dir),
        &[&format!(
            "mismatch: journal.jsonl: seq {seq}: the last line differs from the one the attestation signed"
        )],
    );
}

#[test]
fn a_deleted_journal_line_is_a_gap_at_its_seq() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let mut journal = lines(&run_dir);
    let seq = seq_of(&journal.remove(3));
    write_lines(&run_dir, &journal);
    assert_findings(
        &evidence.verify(&run_dir),
        &[&format!("mismatch: journal.jsonl: seq {seq} is missing")],
    );
}

#[test]
fn two_swapped_journal_lines_are_out_of_order() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let mut journal = lines(&run_dir);
    journal.swap(2, 3);
    write_lines(&run_dir, &journal);
    assert_findings(
        &evidence.verify(&run_dir),
        &["mismatch: journal.jsonl: seq 3 and seq 4 are out of order (lines 3 and 4)"],
    );
}

#[test]
fn unlisted_files_are_named() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    std::fs::write(run_dir.join("artifacts/extra.txt"), "not evidence\n").unwrap();
    std::fs::write(run_dir.join("notes.md"), "not evidence either\n").unwrap();
    assert_findings(
        &evidence.verify(&run_dir),
        &[
            "mismatch: extra.txt: not in the manifest",
            "mismatch: notes.md: not part of a bundle",
        ],
    );
}

#[test]
fn a_dropped_run_end_is_incomplete() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let mut journal = lines(&run_dir);
    let end = seq_of(&journal.pop().unwrap());
    write_lines(&run_dir, &journal);
    let before = end - 1;
    let result = evidence.verify(&run_dir);
    assert_findings(
        &result,
        &[
            &format!("mismatch: journal.jsonl: incomplete: ends at seq {before} with no run_end"),
            &format!(
                "mismatch: journal.jsonl: ends at seq {before}, the attestation signed it ending at seq {end}"
            ),
        ],
    );
    assert!(
        result
            .1
            .contains(&format!("chain holds through seq {before}")),
        "{}",
        result.1
    );
}

#[test]
fn a_replaced_signature_does_not_verify() {
    let evidence = signed_bundle();
    // The same run bundled again and signed by another key: a valid signature, wrong signer.
    let other = keygen(&evidence.dir, "other-key", "");
    let (status, _, stderr) = glow(
        &evidence.dir,
        &[
            "bundle",
            &evidence.id,
            "-o",
            "other.tar.gz",
            "--sign",
            "other-key",
        ],
        &[],
    );
    assert_eq!(status, 0, "{stderr}");
    std::fs::create_dir(evidence.dir.join("other")).unwrap();
    run(
        &evidence.dir.join("other"),
        "tar",
        &["xzf", "../other.tar.gz"],
    );
    let other_envelope = read_json(
        &evidence
            .dir
            .join("other")
            .join(&evidence.id)
            .join("attestation.json"),
    );

    let run_dir = evidence.unpack("unpacked");
    let path = run_dir.join("attestation.json");
    let mut envelope = read_json(&path);
    assert_eq!(
        envelope["payload"], other_envelope["payload"],
        "payloads are deterministic"
    );
    // Only the signature bytes replaced: the signature does not verify with the named key.
    envelope["signatures"][0]["sig"] = other_envelope["signatures"][0]["sig"].clone();
    std::fs::write(&path, envelope.to_string()).unwrap();
    assert_findings(
        &evidence.verify(&run_dir),
        &[&format!(
            "mismatch: attestation.json: the signature by {} does not verify",
            evidence.fingerprint
        )],
    );
    // The whole signature replaced: it verifies, by a key the allowed signers do not hold.
    envelope["signatures"][0] = other_envelope["signatures"][0].clone();
    std::fs::write(&path, envelope.to_string()).unwrap();
    assert_findings(
        &evidence.verify(&run_dir),
        &[&format!(
            "mismatch: attestation.json: signed by {other}, a key"
        )],
    );
}

/// Pids whose parent is `ppid`.
fn children_of(ppid: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name: state ppid ...
        let parent = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1);
        if parent.and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            children.push(pid);
        }
    }
    children
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_killed_run_verifies_as_incomplete_with_its_chain_intact() {
    let test = Test::new().file("a.txt", "alpha\n").script(
        r#"
        step("keep", || artifact::put("a.txt"));
        step("wait", || exec::run("sleep", ["20"]));
        "#,
    );
    let dir = test.path().to_owned();
    let mut child = test
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The step 'wait' is running once its `sleep` is.
    let sleepers = eventually(
        "the run reaching the step 'wait'",
        Duration::from_secs(30),
        || Some(children_of(child.id() as i32)).filter(|found| !found.is_empty()),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for pid in sleepers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let runs = dir.join(".glow/runs");
    let id = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let id = id.to_string_lossy().into_owned();
    let journal = runs.join(&id).join("journal.jsonl");
    let last = seq_of(lines(journal.parent().unwrap()).last().unwrap());
    let (status, stdout, stderr) = glow(&dir, &["verify", &id], &[]);
    assert_eq!(status, 1, "{stdout}\n{stderr}");
    assert_eq!(
        mismatches(&stderr),
        [format!(
            "mismatch: journal.jsonl: incomplete: ends at seq {last} with no run_end (the run was killed, or is still running)"
        )
        .as_str()],
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("chain holds through seq {last}, incomplete")),
        "{stdout}"
    );
    let (_, stdout, _) = glow(&dir, &["show", &id], &[]);
    assert!(
        stdout.contains(&format!("chain holds through seq {last}")),
        "{stdout}"
    );
}

#[test]
fn every_event_carries_prev_and_run_end_the_manifest_digest() {
    // The module prints while the script compiles, before the journal file exists: that event
    // is still the file's seq 1 and the chain covers it.
    let (dir, _out) = Test::new()
        .file(
            "lib/loud.rhai",
            "print(\"loading loud\");\nfn one() { 1 }\n",
        )
        .script(
            r#"
            import "lib/loud" as loud;
            step("store", || artifact::write("n.txt", `${loud::one()}`));
            "#,
        )
        .expect(0);
    let runs = dir.path().join(".glow/runs");
    let id = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let id = id.to_string_lossy().into_owned();
    let manifest = dir
        .path()
        .join(".glow/artifacts")
        .join(&id)
        .join("manifest.json");
    // An independent reading of the chain (Python's hashlib).
    let check = r#"
import hashlib, json, sys
journal, run_id, manifest = sys.argv[1:4]
lines = open(journal, "rb").read().split(b"\n")
assert lines[-1] == b"", "ends with a newline"
prev = hashlib.sha256(run_id.encode()).hexdigest()
for number, line in enumerate(lines[:-1], start=1):
    event = json.loads(line)
    assert event["seq"] == number, (number, event["seq"])
    assert event["prev"] == prev, f"seq {number}: prev {event['prev']} != {prev}"
    prev = hashlib.sha256(line).hexdigest()
first, end = json.loads(lines[0]), json.loads(lines[-2])
assert first["kind"] == "output" and first["line"] == "loading loud", first
assert end["kind"] == "run_end"
assert end["manifest_sha256"] == hashlib.sha256(open(manifest, "rb").read()).hexdigest()
print("chain ok", len(lines) - 1)
"#;
    let journal = runs.join(&id).join("journal.jsonl");
    let output = run(
        dir.path(),
        "python3",
        &[
            "-c",
            check,
            journal.to_str().unwrap(),
            &id,
            manifest.to_str().unwrap(),
        ],
    );
    assert!(output.starts_with("chain ok"), "{output}");
    let (_, stdout, _) = glow(dir.path(), &["show", &id], &[]);
    assert!(stdout.contains("journal verifies:"), "{stdout}");

    // A dry run stores nothing: manifest_sha256 is null, and show names a changed line.
    let events = lines(&runs.join(&id));
    let mut changed = events.clone();
    changed[1] = change_one_byte(&changed[1]);
    write_lines(&runs.join(&id), &changed);
    let (_, stdout, _) = glow(dir.path(), &["show", &id], &[]);
    assert!(
        stdout.contains("journal does not verify")
            && stdout.contains("seq 2: changed after it was written"),
        "{stdout}"
    );
    let (status, _, stderr) = glow(dir.path(), &["script.rhai", "--dry-run"], &[]);
    assert_eq!(status, 0, "{stderr}");
    let mut ids: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    let dry = lines(&runs.join(&ids[1]));
    let end: serde_json::Value = serde_json::from_str(dry.last().unwrap()).unwrap();
    assert!(end["manifest_sha256"].is_null(), "{end}");
}

/// The venv `.ci/run` creates; the test fails (never skips) without it.
fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run .ci/run, or `python3 -m venv target/venv && target/venv/bin/pip install 'securesystemslib[crypto]'`",
        python.display()
    );
    python
}

const DSSE_VERIFY: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
envelope_path, public_path = sys.argv[1:3]
public = serialization.load_ssh_public_key(open(public_path, "rb").read())
raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
data = json.load(open(envelope_path))
keyid = data["signatures"][0]["keyid"]
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": raw})
accepted = Envelope.from_dict(data).verify([key], 1)
statement = json.loads(base64.b64decode(data["payload"]))
print(json.dumps({"accepted": sorted(accepted), "statement": statement}))
"#;

#[test]
fn securesystemslib_accepts_the_signed_attestation_and_finds_every_artifact() {
    let python = venv_python();
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    let envelope = run_dir.join("attestation.json");
    let output = run(
        &evidence.dir,
        python.to_str().unwrap(),
        &[
            "-c",
            DSSE_VERIFY,
            envelope.to_str().unwrap(),
            "release-key.pub",
        ],
    );
    let result: serde_json::Value = serde_json::from_str(&output).expect(&output);
    assert_eq!(
        result["accepted"],
        serde_json::json!([evidence.fingerprint])
    );
    let statement = &result["statement"];
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects: std::collections::BTreeMap<String, String> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["digest"]["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let store = evidence.dir.join(".glow/artifacts").join(&evidence.id);
    for artifact in ["a.txt", "notes.txt", "summary.json"] {
        assert_eq!(
            subjects.get(&format!("artifacts/{artifact}")),
            Some(&sha256sum(&store.join(artifact))),
            "{subjects:?}"
        );
    }
    for file in ["journal.jsonl", "report.md"] {
        assert_eq!(subjects.get(file), Some(&sha256sum(&run_dir.join(file))));
    }
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["runDetails"]["metadata"]["invocationId"],
        evidence.id.as_str()
    );
    assert!(predicate["runDetails"]["metadata"]["finishedOn"].is_string());
    let definition = &predicate["buildDefinition"];
    assert_eq!(
        definition["buildType"],
        "urn:glow-run:build-type:runbook-run:v1"
    );
    assert_eq!(definition["externalParameters"]["vars"]["tag"], "v1.2.3");
    let dependencies = definition["resolvedDependencies"].to_string();
    for (name, file) in [
        ("script.rhai", "script.rhai"),
        ("lib/helpers.rhai", "lib/helpers.rhai"),
    ] {
        let digest = sha256sum(&evidence.dir.join(file));
        assert!(
            dependencies.contains(name) && dependencies.contains(&digest),
            "{name} {digest} not in {dependencies}"
        );
    }

    // The same verifier refuses a changed signature.
    let mut data = read_json(&envelope);
    let sig = data["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    data["signatures"][0]["sig"] = serde_json::json!(format!("{flipped}{}", &sig[1..]));
    std::fs::write(&envelope, data.to_string()).unwrap();
    let refused = Command::new(&python)
        .args([
            "-c",
            DSSE_VERIFY,
            envelope.to_str().unwrap(),
            "release-key.pub",
        ])
        .current_dir(&evidence.dir)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a changed signature was accepted"
    );
}

#[test]
fn the_secret_canary_is_nowhere_in_the_attestation() {
    let evidence = signed_bundle();
    let run_dir = evidence.unpack("unpacked");
    assert!(
        std::fs::read_to_string(run_dir.join("journal.jsonl"))
            .unwrap()
            .contains("[redacted]"),
        "the run used the secret"
    );
    let text = std::fs::read_to_string(run_dir.join("attestation.json")).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let payload = String::from_utf8(payload).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    for (what, haystack) in [("attestation.json", &text), ("its payload", &payload)] {
        assert!(!haystack.contains(CANARY), "the secret is in {what}");
        assert!(
            !haystack.contains(&encoded),
            "the secret (base64) is in {what}"
        );
    }
}

#[test]
fn unsigned_bundles_and_keys_from_glow_toml_env_and_passphrase() {
    let evidence = signed_bundle();
    let dir = &evidence.dir;
    let id = &evidence.id;
    let (status, _, stderr) = glow(dir, &["bundle", id, "-o", "plain.tar.gz"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("(unsigned)"), "{stderr}");
    let (status, stdout, _) = glow(dir, &["verify", "plain.tar.gz"], &[]);
    assert_eq!(status, 0, "{stdout}");
    assert!(stdout.contains("attestation unsigned"), "{stdout}");
    let (status, _, stderr) = glow(
        dir,
        &[
            "verify",
            "plain.tar.gz",
            "--allowed-signers",
            "allowed_signers",
        ],
        &[],
    );
    assert_eq!(status, 1);
    assert!(
        stderr.contains(
            "mismatch: attestation.json: unsigned, and --allowed-signers asks for a signature"
        ),
        "{stderr}"
    );

    // GLOW_SIGNING_KEY, then `[evidence] signing_key` beside the script.
    let (status, _, stderr) = glow(
        dir,
        &["bundle", id, "-o", "env.tar.gz"],
        &[("GLOW_SIGNING_KEY", "release-key")],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("signed by {}", evidence.fingerprint)),
        "{stderr}"
    );
    std::fs::write(
        dir.join("glow.toml"),
        "[evidence]\nsigning_key = \"release-key\"\n",
    )
    .unwrap();
    let (status, _, stderr) = glow(dir, &["bundle", id, "-o", "toml.tar.gz"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("signed by {}", evidence.fingerprint)),
        "{stderr}"
    );
    let (status, stdout, _) = glow(
        dir,
        &[
            "verify",
            "toml.tar.gz",
            "--allowed-signers",
            "allowed_signers",
        ],
        &[],
    );
    assert_eq!(status, 0, "{stdout}");

    // A passphrase-protected key: from GLOW_SIGNING_KEY_PASSPHRASE, else a clear error.
    let locked = keygen(dir, "locked-key", "open sesame");
    let (status, _, stderr) = glow(
        dir,
        &["bundle", id, "-o", "l.tar.gz", "--sign", "locked-key"],
        &[],
    );
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("GLOW_SIGNING_KEY_PASSPHRASE"), "{stderr}");
    let (status, _, stderr) = glow(
        dir,
        &["bundle", id, "-o", "l.tar.gz", "--sign", "locked-key"],
        &[("GLOW_SIGNING_KEY_PASSPHRASE", "open sesame")],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains(&format!("signed by {locked}")), "{stderr}");
    assert!(!stderr.contains("open sesame"));

    // Not ed25519, or not a key: exit 2, saying so.
    run(
        dir,
        "ssh-keygen",
        &["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", "rsa-key"],
    );
    let (status, _, stderr) = glow(
        dir,
        &["bundle", id, "-o", "r.tar.gz", "--sign", "rsa-key"],
        &[],
    );
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("ed25519"), "{stderr}");
    let (status, _, stderr) = glow(
        dir,
        &["bundle", id, "-o", "r.tar.gz", "--sign", "a.txt"],
        &[],
    );
    assert_eq!(status, 2, "{stderr}");
    assert!(
        stderr.contains("a.txt") && stderr.contains("private key"),
        "{stderr}"
    );
    assert!(!dir.join("r.tar.gz").exists());
}
