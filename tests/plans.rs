//! Saved plans and signed approvals (DESIGN.md "Saved plans and signed approvals"): the real
//! binary with real OpenSSH keys (`ssh-keygen`, `ssh-agent`), signatures made both by glow-run
//! and by `ssh-keygen -Y sign`, a pseudo-terminal for a key's passphrase, the real test
//! PostgreSQL for plans named by hash, and the release runbook on the simulated staging.

use crate::support::postgres::{self, PASSWORD};
use crate::support::staging::{self, CONFIG_TOKEN, Faults, JWT, SERVICE_ROLE_KEY, Staging};
use crate::support::{BIN, echo_on, eventually, hermetic, wait_for_echo_off, wait_with_timeout};
use expectrl::Expect;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);
const TOKEN: &str = "deploy-token-canary-51c9e0";
const PASSPHRASE: &str = "passphrase-canary-e2a71f";

const SCRIPT: &str = r#"
let api = env::get("API_BASE_URL");
let token = env::secret("DEPLOY_TOKEN");
let target = fs::read("target.txt");
target.trim();
step("deploy", || exec::run("echo", [`deploying ${target} to ${api}`]));
step("sign-off", || { prompt::approve("security"); prompt::approve("devops"); });
step("announce", || exec::run("echo", ["released"]));
"#;

const POLICY: &str = r#"
[approvals]
allowed_signers = "allowed_signers"
roles = { security = ["alice@example.com"], devops = ["dana@example.com", "eve@example.com", "alice@example.com"] }
require_signatures = true
distinct_from_initiator = true
"#;

/// glow-run in `dir` with a hermetic environment and no controlling terminal.
fn glow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .env("GLOW_INITIATOR", "rel@example.com")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    detach(&mut command);
    let output = wait_with_timeout(command.spawn().expect("spawn glow-run"), TIMEOUT);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn detach(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

fn expect_status(result: &(i32, String, String), code: i32) {
    assert_eq!(
        result.0, code,
        "stdout:\n{}\nstderr:\n{}",
        result.1, result.2
    );
}

/// `ssh-keygen -t ed25519` into `dir/name` (with a passphrase when not empty).
fn keygen(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen must be installed (openssh-client; .ci/run installs it)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    path
}

fn public(key: &Path) -> String {
    let text = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `printf %s HASH | ssh-keygen -Y sign -n NAMESPACE -f KEY`: the armored signature.
fn ssh_sign(key: &Path, hash: &str, namespace: &str) -> String {
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hash.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ssh-keygen -Y sign: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn last_journal(dir: &Path) -> Vec<Value> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir.join(".glow/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    let text = std::fs::read_to_string(runs.last().unwrap().join("journal.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A workspace with SCRIPT, POLICY, keys for alice (security), dana and eve (devops) and
/// mallory (unlisted), and an allowed_signers file for the first three.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("release.rhai"), SCRIPT).unwrap();
        std::fs::write(root.join("glow.toml"), POLICY).unwrap();
        std::fs::write(root.join("target.txt"), "web\n").unwrap();
        let keys = root.join("keys");
        let mut signers = String::new();
        for name in ["alice", "dana", "eve", "mallory"] {
            let key = keygen(&keys, name, "");
            let options = if name == "eve" {
                "valid-before=\"20200101Z\" "
            } else {
                ""
            };
            if name != "mallory" {
                signers.push_str(&format!("{name}@example.com {options}{}\n", public(&key)));
            }
        }
        std::fs::write(root.join("allowed_signers"), signers).unwrap();
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn key(&self, name: &str) -> String {
        format!("keys/{name}")
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("API_BASE_URL", "https://api.staging.example.com"),
            ("DEPLOY_TOKEN", TOKEN),
        ]
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        glow(self.root(), args, &self.env())
    }

    /// A dry run that saves `plan.json`; returns its hash.
    fn plan(&self) -> String {
        let result = self.run(&["release.rhai", "--dry-run", "--plan-out", "plan.json"]);
        expect_status(&result, 0);
        read_json(&self.root().join("plan.json"))["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn approve(&self, role: &str, key: &str) -> (i32, String, String) {
        self.run(&[
            "approve",
            "plan.json",
            "--role",
            role,
            "--key",
            &self.key(key),
        ])
    }

    fn attach(&self, role: &str, principal: &str, signature: &str) -> (i32, String, String) {
        let file = self.root().join(format!("{principal}.sig"));
        std::fs::write(&file, signature).unwrap();
        let at = format!("@{}", file.display());
        self.run(&[
            "approve",
            "plan.json",
            "--role",
            role,
            "--principal",
            principal,
            "--signature",
            &at,
        ])
    }
}

#[test]
fn plan_file_has_the_documented_format_and_a_canonical_hash() {
    let ws = Workspace::new();
    let hash = ws.plan();
    let plan = read_json(&ws.root().join("plan.json"));
    assert_eq!(plan["format"], "glow-run-plan/1");
    assert_eq!(plan["script"]["path"], "release.rhai");
    assert_eq!(plan["complete"], true);
    assert_eq!(
        plan["approvals_required"],
        serde_json::json!(["security", "devops"])
    );
    assert_eq!(plan["secrets"], serde_json::json!(["DEPLOY_TOKEN"]));
    let digest = format!("sha256:{}", sha256("https://api.staging.example.com"));
    assert_eq!(plan["env"]["API_BASE_URL"], digest.as_str());
    let effects = plan["effects"].as_array().unwrap();
    assert_eq!(effects.len(), 2, "{effects:#?}");
    assert_eq!(effects[0]["seq"], 1);
    assert_eq!(effects[0]["step"], "deploy");
    assert_eq!(effects[0]["namespace"], "exec");
    assert_eq!(effects[1]["target"], "echo released");
    assert_eq!(effects[0]["detail_sha256"].as_str().unwrap().len(), 64);
    // The hash: SHA-256 of the canonical JSON of everything but hash and approvals, computed
    // here independently (Python's json.dumps with sorted keys and no whitespace).
    let out = Command::new("python3")
        .arg("-c")
        .arg("import json,sys,hashlib; p=json.load(open(sys.argv[1])); p.pop('hash'); p.pop('approvals'); print(hashlib.sha256(json.dumps(p, sort_keys=True, separators=(',',':'), ensure_ascii=False).encode()).hexdigest())")
        .arg(ws.root().join("plan.json"))
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);
    let text = std::fs::read_to_string(ws.root().join("plan.json")).unwrap();
    assert!(!text.contains(TOKEN), "the secret is in the plan file");
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn openssh_interop_both_ways() {
    let ws = Workspace::new();
    let hash = ws.plan();
    // ssh-keygen's signature is accepted by glow-run...
    let signature = ssh_sign(&ws.root().join("keys/dana"), &hash, "glow-run-plan");
    expect_status(&ws.attach("devops", "dana@example.com", &signature), 0);
    // ...and glow-run's passes ssh-keygen -Y verify.
    expect_status(&ws.approve("security", "alice"), 0);
    let plan = read_json(&ws.root().join("plan.json"));
    let approvals = plan["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 2, "{approvals:#?}");
    let alice = approvals.iter().find(|a| a["role"] == "security").unwrap();
    assert_eq!(alice["principal"], "alice@example.com");
    assert!(alice["key"].as_str().unwrap().starts_with("SHA256:"));
    std::fs::write(
        ws.root().join("alice.sig"),
        alice["signature"].as_str().unwrap(),
    )
    .unwrap();
    let mut verify = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-f",
            "allowed_signers",
            "-I",
            "alice@example.com",
            "-n",
            "glow-run-plan",
            "-s",
            "alice.sig",
        ])
        .current_dir(ws.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    verify
        .stdin
        .take()
        .unwrap()
        .write_all(hash.as_bytes())
        .unwrap();
    let out = verify.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -Y verify refused glow-run's signature: {out:?}"
    );
    let fingerprint = Command::new("ssh-keygen")
        .args(["-l", "-f", "keys/alice.pub"])
        .current_dir(ws.root())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&fingerprint.stdout).contains(alice["key"].as_str().unwrap()));

    // plan show lists both as verifying.
    let shown = ws.run(&["plan", "show", "plan.json"]);
    expect_status(&shown, 0);
    assert!(shown.1.contains(&format!("plan {hash}")), "{}", shown.1);
    assert!(
        shown.1.contains("security by alice@example.com"),
        "{}",
        shown.1
    );
    assert_eq!(shown.1.matches(": verifies").count(), 2, "{}", shown.1);
    assert!(shown.1.contains("#1 [deploy] exec run echo"), "{}", shown.1);

    // The live run bound to the plan succeeds, approvals by signature, effects as planned.
    let live = ws.run(&["release.rhai", "--plan", "plan.json"]);
    expect_status(&live, 0);
    let journal = last_journal(ws.root());
    let approvals: Vec<&Value> = journal.iter().filter(|e| e["kind"] == "approval").collect();
    assert_eq!(approvals.len(), 2);
    for approval in &approvals {
        assert_eq!(approval["method"], "ssh-signature");
        assert_eq!(approval["plan_hash"], hash.as_str());
        assert!(
            approval["signature"]
                .as_str()
                .unwrap()
                .contains("BEGIN SSH SIGNATURE")
        );
        assert!(approval["key"].as_str().unwrap().starts_with("SHA256:"));
    }
    assert_eq!(approvals[0]["principal"], "alice@example.com");
    assert_eq!(approvals[1]["principal"], "dana@example.com");
}

/// `approve` refuses an approval (exit 2, naming the check) and leaves the file as it was.
fn refused(ws: &Workspace, result: (i32, String, String), why: &str) {
    expect_status(&result, 2);
    assert!(result.2.contains(why), "expected '{why}' in:\n{}", result.2);
    let plan = read_json(&ws.root().join("plan.json"));
    assert_eq!(
        plan["approvals"],
        serde_json::json!([]),
        "a refused approval was added"
    );
}

#[test]
fn bad_signatures_are_refused_naming_the_check() {
    let ws = Workspace::new();
    let hash = ws.plan();
    let keys = ws.root().join("keys");
    // A key not in allowed_signers.
    let sig = ssh_sign(&keys.join("mallory"), &hash, "glow-run-plan");
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "is not in allowed_signers",
    );
    // A listed key, but for another role.
    let sig = ssh_sign(&keys.join("dana"), &hash, "glow-run-plan");
    refused(
        &ws,
        ws.attach("security", "dana@example.com", &sig),
        "dana@example.com is not listed for role 'security'",
    );
    // Over another plan's hash.
    let other = "0".repeat(64);
    let sig = ssh_sign(&keys.join("alice"), &other, "glow-run-plan");
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "does not verify over this plan's hash",
    );
    // In another namespace (a git commit signature).
    let sig = ssh_sign(&keys.join("alice"), &hash, "git");
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "namespace 'git', not 'glow-run-plan'",
    );
    // Expired: eve's allowed_signers line has valid-before 2020.
    let sig = ssh_sign(&keys.join("eve"), &hash, "glow-run-plan");
    refused(&ws, ws.attach("devops", "eve@example.com", &sig), "expired");
    // Malformed armor.
    refused(
        &ws,
        ws.attach(
            "security",
            "alice@example.com",
            "-----BEGIN SSH SIGNATURE-----\nnot base64\n-----END SSH SIGNATURE-----\n",
        ),
        "malformed signature",
    );
    // A role the plan does not ask for.
    let result = ws.approve("product", "alice");
    expect_status(&result, 2);
    assert!(
        result.2.contains("asks for no 'product' approval"),
        "{}",
        result.2
    );
    // The initiator cannot approve with distinct_from_initiator: the live run refuses it.
    let sig = ssh_sign(&keys.join("alice"), &hash, "glow-run-plan");
    expect_status(&ws.attach("security", "alice@example.com", &sig), 0);
    expect_status(&ws.approve("devops", "dana"), 0);
    let run = glow(
        ws.root(),
        &["release.rhai", "--plan", "plan.json"],
        &[
            ("API_BASE_URL", "https://api.staging.example.com"),
            ("DEPLOY_TOKEN", TOKEN),
            ("GLOW_INITIATOR", "alice@example.com"),
        ],
    );
    expect_status(&run, 1);
    assert!(
        run.2.contains("alice@example.com started this run"),
        "{}",
        run.2
    );
    // One principal, one role: refused by approve, and by the live run when the file is edited.
    let sig = ssh_sign(&keys.join("alice"), &hash, "glow-run-plan");
    let result = ws.attach("devops", "alice@example.com", &sig);
    expect_status(&result, 2);
    assert!(
        result
            .2
            .contains("alice@example.com already approved this plan as security"),
        "{}",
        result.2
    );
    let mut plan = read_json(&ws.root().join("plan.json"));
    let mut twice = plan["approvals"][0].clone();
    assert_eq!(twice["role"], "security");
    twice["role"] = "devops".into();
    plan["approvals"] = serde_json::json!([plan["approvals"][0].clone(), twice]);
    std::fs::write(ws.root().join("plan.json"), plan.to_string()).unwrap();
    let run = ws.run(&["release.rhai", "--plan", "plan.json"]);
    expect_status(&run, 1);
    assert!(
        run.2
            .contains("alice@example.com already approved role 'security' of this plan"),
        "{}",
        run.2
    );
    assert!(
        !last_journal(ws.root())
            .iter()
            .any(|e| e["kind"] == "approval" && e["role"] == "devops")
    );
}

#[test]
fn allowed_signers_options_are_honoured() {
    let ws = Workspace::new();
    let hash = ws.plan();
    let alice = public(&ws.root().join("keys/alice"));
    let write = |line: String| std::fs::write(ws.root().join("allowed_signers"), line).unwrap();
    let sig = ssh_sign(&ws.root().join("keys/alice"), &hash, "glow-run-plan");
    write(format!(
        "alice@example.com namespaces=\"git,file\" {alice}\n"
    ));
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "does not include glow-run-plan",
    );
    write(format!(
        "alice@example.com valid-after=\"29990101\" {alice}\n"
    ));
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "valid only after",
    );
    write(format!("alice@example.com cert-authority {alice}\n"));
    refused(
        &ws,
        ws.attach("security", "alice@example.com", &sig),
        "cert-authority entries are not supported",
    );
    write(format!(
        "*@example.com,!bob@example.com namespaces=\"git,glow-run-plan\",valid-before=\"29991231Z\" {alice}\n"
    ));
    expect_status(&ws.attach("security", "alice@example.com", &sig), 0);
}

#[test]
fn stale_tampered_incomplete_and_misused_plans_are_refused_before_anything_runs() {
    let ws = Workspace::new();
    let hash = ws.plan();
    expect_status(&ws.approve("security", "alice"), 0);
    expect_status(&ws.approve("devops", "dana"), 0);
    let root = ws.root();
    let no_run = |result: &(i32, String, String), why: &[&str]| {
        expect_status(result, 2);
        for text in why {
            assert!(
                result.2.contains(text),
                "expected '{text}' in:\n{}",
                result.2
            );
        }
        assert!(
            !root.join(".glow/runs").read_dir().unwrap().any(|d| {
                std::fs::read_to_string(d.unwrap().path().join("journal.jsonl"))
                    .unwrap_or_default()
                    .contains("\"mode\":\"live\"")
            }),
            "a refused plan started a live run"
        );
    };
    // Another env value (digests named with both hashes).
    let other = glow(
        root,
        &["release.rhai", "--plan", "plan.json"],
        &[
            ("API_BASE_URL", "https://api.other.example.com"),
            ("DEPLOY_TOKEN", TOKEN),
        ],
    );
    let now = format!("sha256:{}", sha256("https://api.other.example.com"));
    let was = format!("sha256:{}", sha256("https://api.staging.example.com"));
    no_run(&other, &["env API_BASE_URL", &was, &now, &hash]);
    // A var that was not in the plan.
    no_run(
        &ws.run(&["release.rhai", "--plan", "plan.json", "--var", "tag=v2"]),
        &["var tag: (not given) in the plan, \"v2\" now"],
    );
    // glow.toml changed.
    let policy = std::fs::read_to_string(root.join("glow.toml")).unwrap();
    std::fs::write(root.join("glow.toml"), format!("{policy}\n# edited\n")).unwrap();
    no_run(
        &ws.run(&["release.rhai", "--plan", "plan.json"]),
        &["glow.toml: sha256"],
    );
    std::fs::write(root.join("glow.toml"), &policy).unwrap();
    // The script edited by one line, and a plan of another script.
    let script = std::fs::read_to_string(root.join("release.rhai")).unwrap();
    std::fs::write(
        root.join("release.rhai"),
        script.replace("released", "released!"),
    )
    .unwrap();
    no_run(
        &ws.run(&["release.rhai", "--plan", "plan.json"]),
        &["script: the plan is of release.rhai sha256"],
    );
    std::fs::write(root.join("release.rhai"), &script).unwrap();
    std::fs::write(root.join("other.rhai"), &script).unwrap();
    no_run(
        &ws.run(&["other.rhai", "--plan", "plan.json"]),
        &["the plan is of release.rhai", "this run is other.rhai"],
    );
    // A tampered plan (an effect's target edited after signing).
    let text = std::fs::read_to_string(root.join("plan.json")).unwrap();
    std::fs::write(
        root.join("tampered.json"),
        text.replace("echo released", "echo pwned"),
    )
    .unwrap();
    no_run(
        &ws.run(&["release.rhai", "--plan", "tampered.json"]),
        &["was edited after it was made", &hash],
    );
    let shown = ws.run(&["plan", "show", "tampered.json"]);
    expect_status(&shown, 2);
    // --plan with --dry-run is a usage error.
    let both = ws.run(&["release.rhai", "--plan", "plan.json", "--dry-run"]);
    expect_status(&both, 2);
    assert!(both.2.contains("cannot be used with"), "{}", both.2);
    // A plan made by a dry run that lacked env: complete false, refused.
    let lacking = glow(
        root,
        &["release.rhai", "--dry-run", "--plan-out", "lacking.json"],
        &[("DEPLOY_TOKEN", TOKEN)],
    );
    expect_status(&lacking, 0);
    assert_eq!(read_json(&root.join("lacking.json"))["complete"], false);
    no_run(
        &ws.run(&["release.rhai", "--plan", "lacking.json"]),
        &["incomplete (complete: false)", "API_BASE_URL"],
    );
    // require_signatures: a live run without --plan is refused.
    no_run(
        &ws.run(&["release.rhai"]),
        &["require_signatures = true", "--plan"],
    );
    // The untouched plan still runs.
    expect_status(&ws.run(&["release.rhai", "--plan", "plan.json"]), 0);
}

#[test]
fn the_gate_refuses_an_effect_the_plan_does_not_list_and_reports_unreached_ones() {
    let ws = Workspace::new();
    ws.plan();
    expect_status(&ws.approve("security", "alice"), 0);
    expect_status(&ws.approve("devops", "dana"), 0);
    // target.txt is read at run time and is not part of the plan: the command now differs.
    std::fs::write(ws.root().join("target.txt"), "db\n").unwrap();
    let run = ws.run(&["release.rhai", "--plan", "plan.json"]);
    expect_status(&run, 1);
    assert!(
        run.2
            .contains("planned:   #1 [deploy] exec run echo 'deploying web to"),
        "{}",
        run.2
    );
    assert!(
        run.2
            .contains("attempted: #1 [deploy] exec run echo 'deploying db to"),
        "{}",
        run.2
    );
    let journal = last_journal(ws.root());
    let effect = journal
        .iter()
        .find(|e| e["kind"] == "effect" && e["namespace"] == "exec")
        .unwrap();
    assert_eq!(effect["outcome"], "denied");
    assert!(
        !journal.iter().any(
            |e| e["kind"] == "output" && e["line"].as_str().unwrap_or("").contains("deploying")
        ),
        "the refused command ran"
    );
    let plan_event = journal.iter().find(|e| e["kind"] == "plan").unwrap();
    assert_eq!(
        plan_event["saved_plan"]["unreached"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let runs = ws.root().join(".glow/runs");
    let mut dirs: Vec<PathBuf> = runs
        .read_dir()
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    dirs.sort();
    let report = std::fs::read_to_string(dirs.last().unwrap().join("report.md")).unwrap();
    assert!(
        report.contains("Planned effects this run never reached"),
        "{report}"
    );
    assert!(report.contains("`exec run echo released`"), "{report}");

    // An extra effect: a plan made from a script whose second step did nothing.
    std::fs::write(ws.root().join("target.txt"), "web\n").unwrap();
    let script = SCRIPT.replace(
        r#"exec::run("echo", ["released"])"#,
        r#"if fs::exists("extra") { exec::run("echo", ["released"]) }"#,
    );
    std::fs::write(ws.root().join("release.rhai"), script).unwrap();
    ws.plan();
    expect_status(&ws.approve("security", "alice"), 0);
    expect_status(&ws.approve("devops", "dana"), 0);
    std::fs::write(ws.root().join("extra"), "").unwrap();
    let run = ws.run(&["release.rhai", "--plan", "plan.json"]);
    expect_status(&run, 1);
    assert!(run.2.contains("refuses an extra effect: it lists 1 effect(s), and #2 [announce] exec run echo released"), "{}", run.2);
}

#[test]
fn an_encrypted_key_asks_its_passphrase_at_the_terminal_and_an_agent_key_signs_too() {
    let ws = Workspace::new();
    let hash = ws.plan();
    // Re-key alice with a passphrase.
    let keys = ws.root().join("keys");
    std::fs::remove_file(keys.join("alice")).unwrap();
    std::fs::remove_file(keys.join("alice.pub")).unwrap();
    let alice = keygen(&keys, "alice", PASSPHRASE);
    let dana = public(&keys.join("dana"));
    std::fs::write(
        ws.root().join("allowed_signers"),
        format!(
            "alice@example.com {}\ndana@example.com {dana}\n",
            public(&alice)
        ),
    )
    .unwrap();

    // Without a terminal: a clear error.
    let result = ws.approve("security", "alice");
    expect_status(&result, 2);
    assert!(
        result.2.contains("is encrypted and there is no terminal"),
        "{}",
        result.2
    );

    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command.current_dir(ws.root()).args([
        "approve",
        "plan.json",
        "--role",
        "security",
        "--key",
        "keys/alice",
    ]);
    let mut session = expectrl::Session::spawn(echo_on(&command)).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    session
        .expect("Passphrase for keys/alice")
        .expect("the passphrase prompt");
    wait_for_echo_off(&session);
    session.send(format!("{PASSPHRASE}\r")).unwrap();
    let text = session.expect(expectrl::Eof).unwrap();
    let text = String::from_utf8_lossy(text.as_bytes()).into_owned();
    assert!(text.contains("approved plan"), "{text}");
    assert!(
        !text.contains(PASSPHRASE),
        "the passphrase was echoed: {text}"
    );

    // ssh-agent: --key names the public key; the private key stays in the agent.
    let socket = ws.root().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    eventually("ssh-agent's socket", Duration::from_secs(10), || {
        socket.exists().then_some(())
    });
    let added = Command::new("ssh-add")
        .arg(keys.join("dana"))
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "ssh-add: {added:?}");
    let sock = socket.display().to_string();
    let result = glow(
        ws.root(),
        &[
            "approve",
            "plan.json",
            "--role",
            "devops",
            "--key",
            "keys/dana.pub",
        ],
        &[("SSH_AUTH_SOCK", sock.as_str())],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    expect_status(&result, 0);
    let plan = read_json(&ws.root().join("plan.json"));
    assert_eq!(plan["approvals"].as_array().unwrap().len(), 2);
    expect_status(&ws.run(&["release.rhai", "--plan", "plan.json"]), 0);
    let text = std::fs::read_to_string(ws.root().join("plan.json")).unwrap();
    assert!(
        !text.contains(PASSPHRASE),
        "the passphrase is in the plan file"
    );
    assert!(
        !text.contains("PRIVATE KEY"),
        "a private key is in the plan file"
    );
    assert_eq!(
        read_json(&ws.root().join("plan.json"))["hash"],
        hash.as_str()
    );
}

#[test]
fn typed_approvals_must_be_identities_refusals_decline_and_env_files_do_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("s.rhai"),
        r#"let a = prompt::approve("security"); print(`by ${a.approver} ${a.planned}`);"#,
    )
    .unwrap();
    std::fs::write(
        root.join("glow.toml"),
        "[approvals]\nroles = { security = [\"secops-bot\"] }\n",
    )
    .unwrap();
    for word in ["decline", "reject", "cancel", "abort", "nope", "no"] {
        let result = glow(root, &["s.rhai"], &[("GLOW_ANSWER_APPROVE_SECURITY", word)]);
        expect_status(&result, 1);
        assert!(
            result.2.contains("approval 'security' was declined"),
            "{word}: {}",
            result.2
        );
        assert!(
            !last_journal(root).iter().any(|e| e["kind"] == "approval"),
            "{word} approved"
        );
    }
    for word in ["ok", "maybe", "bob", "a@b", "x y@example.com"] {
        let result = glow(root, &["s.rhai"], &[("GLOW_ANSWER_APPROVE_SECURITY", word)]);
        expect_status(&result, 1);
        assert!(
            result.2.contains("is not an identity"),
            "{word}: {}",
            result.2
        );
    }
    for who in ["carol@example.com", "secops-bot"] {
        let result = glow(root, &["s.rhai"], &[("GLOW_ANSWER_APPROVE_SECURITY", who)]);
        expect_status(&result, 0);
        assert!(
            result.1.contains(&format!("by {who} false")),
            "{}",
            result.1
        );
        let approval = last_journal(root)
            .into_iter()
            .find(|e| e["kind"] == "approval")
            .unwrap();
        assert_eq!(approval["method"], "typed");
        assert_eq!(approval["source"], "env");
    }
    // An --env-file does not answer prompts.
    std::fs::write(
        root.join("release.env"),
        "GLOW_ANSWER_APPROVE_SECURITY=carol@example.com\n",
    )
    .unwrap();
    let result = glow(root, &["s.rhai", "--env-file", "release.env"], &[]);
    expect_status(&result, 1);
    assert!(
        result
            .2
            .contains("needs an answer and there is no terminal"),
        "{}",
        result.2
    );
    assert!(
        result
            .2
            .contains("GLOW_ANSWER_APPROVE_SECURITY in --env-file is ignored"),
        "{}",
        result.2
    );
    assert!(!last_journal(root).iter().any(|e| e["kind"] == "approval"));
}

#[test]
fn plans_by_hash_in_the_shared_state_and_a_run_waiting_for_a_signature() {
    let ws = Workspace::new();
    let db = postgres::database();
    let policy = POLICY.replace(
        "require_signatures = true",
        "require_signatures = true\nwait = \"2m\"",
    );
    std::fs::write(ws.root().join("glow.toml"), policy).unwrap();
    let state = ["--state", db.url.as_str()];
    let made = ws.run(&[
        "release.rhai",
        "--dry-run",
        "--plan-out",
        "plan.json",
        state[0],
        state[1],
    ]);
    expect_status(&made, 0);
    let hash = read_json(&ws.root().join("plan.json"))["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(ws.root().join("plan.json")).unwrap();
    let shown = ws.run(&["plan", "show", &hash[..12], state[0], state[1]]);
    expect_status(&shown, 0);
    assert!(
        shown.1.contains(&format!("plan {hash} (the shared state)")),
        "{}",
        shown.1
    );
    assert!(
        shown.1.contains("still needed: security, devops"),
        "{}",
        shown.1
    );
    expect_status(
        &ws.run(&[
            "approve",
            &hash,
            "--role",
            "devops",
            "--key",
            "keys/dana",
            state[0],
            state[1],
        ]),
        0,
    );
    // Without --state a hash is not a file.
    let missing = ws.run(&["plan", "show", &hash]);
    expect_status(&missing, 2);
    assert!(missing.2.contains("give --state"), "{}", missing.2);

    // The live run waits in approve("security") until alice signs from elsewhere.
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(ws.root())
        .args(["release.rhai", "--plan", &hash, "--state", &db.url])
        .env("GLOW_INITIATOR", "rel@example.com")
        .envs(ws.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    detach(&mut command);
    let mut child = command.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut seen = Vec::new();
    let waiting = loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the run never said it waits");
        seen.push(line.clone());
        if line.contains("waiting up to") {
            break line;
        }
    };
    assert!(
        waiting.contains("as security (alice@example.com)"),
        "{waiting}"
    );
    assert!(
        waiting.contains(&format!("glow-run approve {hash} --role security --state")),
        "{waiting}"
    );
    assert!(!waiting.contains(PASSWORD), "{waiting}");
    expect_status(
        &ws.run(&[
            "approve",
            &hash,
            "--role",
            "security",
            "--key",
            "keys/alice",
            state[0],
            state[1],
        ]),
        0,
    );
    let signed_at = chrono::Utc::now();
    let output = wait_with_timeout(child, TIMEOUT);
    let rest: Vec<String> = receiver.try_iter().collect();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        seen.join("\n"),
        rest.join("\n")
    );
    let journal = last_journal(ws.root());
    let approvals: Vec<&Value> = journal.iter().filter(|e| e["kind"] == "approval").collect();
    assert_eq!(approvals.len(), 2);
    assert!(
        approvals
            .iter()
            .all(|a| a["method"] == "ssh-signature" && a["plan_hash"] == hash.as_str())
    );
    // A figure, not an assertion (no timing assertions): how soon the run saw the signature.
    let seen_at =
        chrono::DateTime::parse_from_rfc3339(approvals[1]["time"].as_str().unwrap()).unwrap();
    eprintln!(
        "signature seen {} ms after `glow-run approve` ended",
        (seen_at.with_timezone(&chrono::Utc) - signed_at).num_milliseconds()
    );
    let dump = postgres::cluster().dump(&db.name);
    assert!(dump.contains(&hash), "the plan is not in the shared state");
    for secret in [TOKEN, PASSWORD] {
        assert!(!dump.contains(secret), "{secret} in the shared state");
    }
}

/// Every file the release wrote (state dir, artifacts) plus the plan file.
fn assert_clean(staging: &Staging, plan: &Path, keys: &Path, outputs: &[&str]) {
    let mut secrets: Vec<String> = [JWT, SERVICE_ROLE_KEY, CONFIG_TOKEN, PASSWORD, PASSPHRASE]
        .map(str::to_owned)
        .to_vec();
    for name in ["alice", "dana", "pat"] {
        let private = std::fs::read_to_string(keys.join(name)).unwrap();
        secrets.extend(
            private
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    let mut files = staging.written_files();
    files.push((plan.to_owned(), std::fs::read_to_string(plan).unwrap()));
    for secret in &secrets {
        for (path, text) in &files {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({}…) is in {}",
                &secret[..8],
                path.display()
            );
        }
        for output in outputs {
            assert!(
                !output.contains(secret.as_str()),
                "a secret is in the output"
            );
        }
    }
}

#[test]
fn release_on_staging_from_plan_to_three_signatures_to_the_live_run() {
    let staging = Staging::start(Faults::default());
    let root = staging.root.clone();
    // A copy of scripts/ whose policy requires signatures, and three approvers' keys.
    let scripts = root.join("scripts");
    std::fs::create_dir_all(scripts.join("verify")).unwrap();
    for entry in std::fs::read_dir(staging::repo().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, scripts.join(path.file_name().unwrap())).unwrap();
        }
    }
    let policy = std::fs::read_to_string(scripts.join("glow.toml")).unwrap();
    std::fs::write(
        scripts.join("glow.toml"),
        format!("{policy}require_signatures = true\n"),
    )
    .unwrap();
    let keys = root.join("keys");
    let mut signers = String::new();
    for name in ["alice", "dana", "pat"] {
        let key = keygen(&keys, name, if name == "pat" { PASSPHRASE } else { "" });
        signers.push_str(&format!(
            "{name}@example.com namespaces=\"glow-run-plan\" {}\n",
            public(&key)
        ));
    }
    std::fs::write(staging.app().join("GO-LIVE/allowed_signers"), signers).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.email=dev@example.com", "-c", "user.name=dev"])
            .args(args)
            .current_dir(staging.app())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["commit", "-q", "-am", "approvers' keys"]);
    let release = scripts.join("release.rhai");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = staging.command_at(Path::new("scripts/release.rhai"), extra);
        for name in [
            "GLOW_ANSWER_APPROVE_SECURITY",
            "GLOW_ANSWER_APPROVE_DEVOPS",
            "GLOW_ANSWER_APPROVE_PRODUCT",
        ] {
            command.env_remove(name);
        }
        command
            .env("GLOW_INITIATOR", "rel@example.com")
            .envs(env.iter().copied());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        detach(&mut command);
        let output = wait_with_timeout(command.spawn().unwrap(), Duration::from_secs(240));
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let dry = run(&["--dry-run", "--plan-out", "plan.json"], &[]);
    expect_status(&dry, 0);
    let plan_path = root.join("plan.json");
    let plan = read_json(&plan_path);
    assert_eq!(plan["complete"], true, "{plan:#}");
    assert_eq!(
        plan["approvals_required"],
        serde_json::json!(["security", "devops", "product"])
    );
    assert!(
        plan["modules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "stdlib/glow/checks.rhai")
    );
    let hash = plan["hash"].as_str().unwrap().to_owned();

    // Three approvers, three keys: glow-run approve, ssh-keygen -Y sign, and an encrypted key
    // at a terminal.
    let alice = glow(
        &root,
        &[
            "approve",
            "plan.json",
            "--role",
            "security",
            "--key",
            "keys/alice",
        ],
        &[],
    );
    expect_status(&alice, 0);
    let sig = ssh_sign(&keys.join("dana"), &hash, "glow-run-plan");
    std::fs::write(root.join("dana.sig"), sig).unwrap();
    let dana = glow(
        &root,
        &[
            "approve",
            "plan.json",
            "--role",
            "devops",
            "--principal",
            "dana@example.com",
            "--signature",
            "@dana.sig",
        ],
        &[],
    );
    expect_status(&dana, 0);
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command.current_dir(&root).args([
        "approve",
        "plan.json",
        "--role",
        "product",
        "--key",
        "keys/pat",
    ]);
    let mut session = expectrl::Session::spawn(echo_on(&command)).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(60)));
    session.expect("Passphrase").expect("passphrase prompt");
    wait_for_echo_off(&session);
    session.send(format!("{PASSPHRASE}\r")).unwrap();
    let signed = session.expect(expectrl::Eof).unwrap();
    let pat = String::from_utf8_lossy(signed.as_bytes()).into_owned();
    assert!(pat.contains("as product by pat@example.com"), "{pat}");
    let shown = glow(&root, &["plan", "show", "plan.json"], &[]);
    expect_status(&shown, 0);
    assert_eq!(shown.1.matches(": verifies").count(), 3, "{}", shown.1);

    // Refused as stale: another API_BASE_URL, a tampered plan, one line of release.rhai edited.
    let other = run(
        &["--plan", "plan.json"],
        &[("API_BASE_URL", "http://127.0.0.1:9/")],
    );
    expect_status(&other, 2);
    assert!(other.2.contains("env API_BASE_URL: sha256:"), "{}", other.2);
    let text = std::fs::read_to_string(&plan_path).unwrap();
    let tampered = text.replacen("npm ci", "npm install", 1);
    assert_ne!(tampered, text);
    std::fs::write(root.join("tampered.json"), tampered).unwrap();
    let result = run(&["--plan", "tampered.json"], &[]);
    expect_status(&result, 2);
    assert!(
        result.2.contains("was edited after it was made"),
        "{}",
        result.2
    );
    let original = std::fs::read_to_string(&release).unwrap();
    std::fs::write(
        &release,
        original.replacen("log::info(`release ${tag}", "log::info(`Release ${tag}", 1),
    )
    .unwrap();
    let result = run(&["--plan", "plan.json"], &[]);
    expect_status(&result, 2);
    assert!(
        result
            .2
            .contains("script: the plan is of scripts/release.rhai sha256"),
        "{}",
        result.2
    );
    std::fs::write(&release, &original).unwrap();
    assert!(
        staging
            .calls()
            .iter()
            .all(|c| c[0] == "gh" || c[..] == ["pnpm", "supabase:migrate:web-cache", "--dry-run"]),
        "a refused run ran tools"
    );

    // The live run bound to the plan: its effects are exactly the plan's.
    let live = run(&["--plan", "plan.json"], &[]);
    expect_status(&live, 0);
    let journal = staging.journals().pop().unwrap();
    let performed: Vec<(String, String, String, String)> = journal
        .iter()
        .filter(|e| e["kind"] == "effect" && e["read_only"] == false)
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_owned(),
                e["namespace"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let planned: Vec<(String, String, String, String)> = plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_owned(),
                e["namespace"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(planned.len() > 40);
    assert_eq!(performed, planned);
    let approvals: Vec<&Value> = journal.iter().filter(|e| e["kind"] == "approval").collect();
    let principals: Vec<&str> = approvals
        .iter()
        .map(|a| a["principal"].as_str().unwrap())
        .collect();
    assert_eq!(
        principals,
        ["alice@example.com", "dana@example.com", "pat@example.com"]
    );
    assert!(
        approvals
            .iter()
            .all(|a| a["method"] == "ssh-signature" && a["plan_hash"] == hash.as_str())
    );
    let plan_event = journal.iter().find(|e| e["kind"] == "plan").unwrap();
    assert_eq!(plan_event["saved_plan"]["unreached"], serde_json::json!([]));
    // The flow's transcript (shown with `cargo test --test lib release_on_staging -- --nocapture`).
    let tail = |text: &str, n: usize| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    eprintln!(
        "$ glow-run scripts/release.rhai --var workspace=app --var tag=v1.0.0 ... --dry-run --plan-out plan.json\n{}\n\
         $ glow-run approve plan.json --role security --key keys/alice\n{}\n\
         $ printf %s $HASH | ssh-keygen -Y sign -n glow-run-plan -f keys/dana > dana.sig\n\
         $ glow-run approve plan.json --role devops --principal dana@example.com --signature @dana.sig\n{}\n\
         $ glow-run approve plan.json --role product --key keys/pat\n{}\n\
         $ glow-run plan show plan.json\n{}\n\
         $ glow-run scripts/release.rhai --var workspace=app --var tag=v1.0.0 ... --plan plan.json\n{}",
        tail(&dry.2, 8),
        tail(&alice.2, 1),
        tail(&dana.2, 1),
        tail(&pat, 2),
        tail(&shown.1, 5),
        tail(&live.2, 24)
    );
    assert_clean(
        &staging,
        &plan_path,
        &keys,
        &[&dry.1, &dry.2, &live.1, &live.2],
    );
}
