//! Evidence: the artifact store and its manifest, confinement, atomic writes, the run index
//! (runs/show/resume), the run report, bundles and verify.

use crate::support::tools::{calls, path_with, standin};
use crate::support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs glow-run in `dir` with `args` and extra env; returns (status, stdout, stderr).
fn glow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
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

fn run_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join(".glow/runs"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn manifest(root: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(root.join("manifest.json")).expect("manifest.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    value["artifacts"]
        .as_array()
        .expect("artifacts list")
        .clone()
}

fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Every regular file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn manifest_hashes_equal_sha256sum_of_the_stored_files() {
    let (dir, out) = Test::new()
        .file("coverage/lcov.info", "TN:\nSF:src/app.ts\nend_of_record\n")
        .file("coverage/html/index.html", "<html>coverage</html>\n")
        .file("k6-summary.json", "{\"p95\": 120}\n")
        .script(
            r#"
            step("evidence", || {
                let file = artifact::put("k6-summary.json");
                print(`put ${file.name} ${file.size} ${file.sha256} ${file.planned}`);
                let tree = artifact::put("coverage");
                print(`tree ${tree.name} files=${tree.files.len()} size=${tree.size}`);
                let text = artifact::write("notes/release.txt", "released v1.2.3\n");
                print(`write ${text.name} ${text.sha256}`);
                artifact::write("scores.json", #{ lighthouse: 98, axe: [] });
                artifact::write("raw.bin", blob(3, 0x41));
                print(`list ${artifact::list().len()}`);
            });
            "#,
        )
        .expect(0);
    let id = &run_ids(dir.path())[0];
    let root = dir.path().join(".glow/artifacts").join(id);
    let entries = manifest(&root);
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "k6-summary.json",
            "coverage/html/index.html",
            "coverage/lcov.info",
            "notes/release.txt",
            "scores.json",
            "raw.bin"
        ]
    );
    for entry in &entries {
        let stored = root.join(entry["name"].as_str().unwrap());
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            sha256sum(&stored),
            "{entry}"
        );
        assert_eq!(
            entry["size"].as_u64().unwrap(),
            std::fs::metadata(&stored).unwrap().len()
        );
        assert_eq!(entry["step"], "evidence");
        assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(std::fs::read(root.join("raw.bin")).unwrap(), b"AAA");
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("scores.json")).unwrap()).unwrap();
    assert_eq!(scores["lighthouse"], 98);
    // The returned maps agree with the manifest.
    let k6 = &entries[0];
    assert!(
        out.stdout.contains(&format!(
            "put k6-summary.json 13 {} false",
            k6["sha256"].as_str().unwrap()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("tree coverage files=2 size="),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!(
        "write notes/release.txt {}",
        sha256sum(&root.join("notes/release.txt"))
    )));
    assert!(out.stdout.contains("list 6"), "{}", out.stdout);
    // Each artifact is journaled.
    let events = out.journal();
    let artifacts = out.events(&events, "artifact");
    assert_eq!(artifacts.len(), 6);
    assert_eq!(artifacts[0]["planned"], false);
    assert_eq!(artifacts[0]["sha256"], k6["sha256"]);
    // No temp file is left behind.
    assert!(
        files_under(&root).iter().all(|f| !f.contains(".glow-tmp-")),
        "{:?}",
        files_under(&root)
    );
}

#[test]
fn hostile_artifact_names_are_rejected_and_nothing_is_written_outside_the_store() {
    let test = Test::new()
        .file("glow.toml", "[artifacts]\nroot = \"store\"\n")
        .file("outside/keep.txt", "outside\n")
        .file("store/.keep", "")
        .file("tree/inside.txt", "inside\n")
        .file("secret-outside.txt", "do not copy me\n");
    let root = test.path().to_owned();
    std::os::unix::fs::symlink(root.join("outside"), root.join("store/link")).unwrap();
    std::os::unix::fs::symlink(root.join("outside/keep.txt"), root.join("store/evil")).unwrap();
    std::os::unix::fs::symlink(
        root.join("secret-outside.txt"),
        root.join("tree/escape.txt"),
    )
    .unwrap();
    let (_dir, out) = test
        .script(
            r#"
            for name in ["../x", "/etc/passwd", "a/../../b", "a\x00b", "link/x", "evil"] {
                try {
                    artifact::write(name, "pwned");
                    print(`accepted ${name}`);
                } catch (error) {
                    print(`rejected: ${error}`);
                }
            }
            try { artifact::put("tree", "../tree"); print("accepted put"); } catch (error) { print(`rejected: ${error}`); }
            let tree = artifact::put("tree");
            print(`tree files=${tree.files.len()}`);
            "#,
        )
        .expect(0);
    let rejected: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rejected: "))
        .collect();
    assert_eq!(rejected.len(), 7, "{}", out.stdout);
    assert!(!out.stdout.contains("accepted"), "{}", out.stdout);
    assert!(
        rejected[0].contains("'../x' contains '..'"),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[1].contains("'/etc/passwd' is absolute"),
        "{}",
        rejected[1]
    );
    assert!(rejected[2].contains("contains '..'"), "{}", rejected[2]);
    assert!(rejected[3].contains("NUL"), "{}", rejected[3]);
    assert!(rejected[4].contains("outside the store"), "{}", rejected[4]);
    assert!(rejected[5].contains("outside the store"), "{}", rejected[5]);
    // Nothing landed outside the store.
    assert!(!root.join("x").exists() && !root.join("b").exists());
    assert_eq!(files_under(&root.join("outside")), ["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(root.join("outside/keep.txt")).unwrap(),
        "outside\n"
    );
    // put of a directory does not follow a symlink out of it.
    assert!(out.stdout.contains("tree files=1"), "{}", out.stdout);
    assert!(root.join("store/tree/inside.txt").is_file());
    assert!(!root.join("store/tree/escape.txt").exists());
    assert!(
        out.stderr
            .contains("escape.txt (a symlink out of the directory)"),
        "{}",
        out.stderr
    );
}

#[test]
fn put_of_a_missing_source_is_a_clear_error() {
    let out = Test::new()
        .script("step(\"evidence\", || artifact::put(\"no/such/file.txt\"));")
        .status(1);
    assert!(
        out.stderr
            .contains("artifact::put: cannot read 'no/such/file.txt'"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);
}

#[test]
fn a_root_template_takes_vars_and_a_missing_var_is_named() {
    let script = "step(\"evidence\", || artifact::write(\"note.txt\", \"hello\"));";
    let (dir, _out) = Test::new()
        .file(
            "glow.toml",
            "[artifacts]\nroot = \"GO-LIVE/artifacts/{tag}\"\n",
        )
        .script(script)
        .args(&["--var", "tag=v1.2.3"])
        .expect(0);
    let root = dir.path().join("GO-LIVE/artifacts/v1.2.3");
    assert_eq!(
        std::fs::read_to_string(root.join("note.txt")).unwrap(),
        "hello"
    );
    assert_eq!(manifest(&root)[0]["name"], "note.txt");

    let out = Test::new()
        .file(
            "glow.toml",
            "[artifacts]\nroot = \"GO-LIVE/artifacts/{tag}\"\n",
        )
        .script(script)
        .status(1);
    assert!(
        out.stderr
            .contains("uses {tag}, but no --var tag=... was given"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_dry_run_plans_artifacts_with_their_hashes_and_writes_nothing() {
    let (dir, out) = Test::new()
        .file("report.html", "<html>lighthouse</html>\n")
        .script(
            r#"
            step("evidence", || {
                let put = artifact::put("report.html");
                print(`${put.planned} ${put.size} ${put.sha256}`);
                artifact::write("summary.json", #{ ok: true });
            });
            "#,
        )
        .arg("--dry-run")
        .expect(0);
    let expected = sha256sum(&dir.path().join("report.html"));
    assert!(
        out.stdout.contains(&format!("true 24 {expected}")),
        "{}",
        out.stdout
    );
    assert!(
        !dir.path().join(".glow/artifacts").exists(),
        "a dry run created the store"
    );
    assert!(
        out.stderr.contains("artifact put report.html"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("artifact write summary.json"),
        "{}",
        out.stderr
    );
    let events = out.journal();
    let planned = out.events(&events, "artifact");
    assert_eq!(planned.len(), 2);
    assert!(planned.iter().all(|e| e["planned"] == true));
    assert_eq!(planned[0]["sha256"], expected.as_str());
}

#[test]
fn sigkill_during_a_large_put_leaves_no_partial_file_under_its_name() {
    let test = Test::new()
        .file("glow.toml", "[artifacts]\nroot = \"store\"\n")
        .script("step(\"evidence\", || artifact::put(\"big.bin\"));");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(test.path().join("big.bin")).unwrap();
        let chunk = vec![0x5a_u8; 1024 * 1024];
        for _ in 0..300 {
            file.write_all(&chunk).unwrap();
        }
    }
    let store = test.path().join("store");
    let mut child = test
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the copy is under way (its temp file exists and is growing), then SIGKILL.
    let temp = eventually("the put starting", Duration::from_secs(60), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "glow-run ended before it could be killed"
        );
        let found = std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(".glow-tmp-"))?;
        (found.metadata().map(|m| m.len()).unwrap_or(0) > 0).then(|| found.path())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0);
    assert!(
        partial < 300 * 1024 * 1024,
        "the copy had finished before the kill"
    );
    assert!(
        !store.join("big.bin").exists(),
        "a partial file was left under the final name"
    );
    let listed = std::fs::read_to_string(store.join("manifest.json")).unwrap_or_default();
    assert!(!listed.contains("big.bin"), "{listed}");
}

#[test]
fn resume_skips_succeeded_steps_and_reruns_the_failed_one() {
    let test = Test::new().script(
        r#"
        step("build", || exec::run("npm", ["run", "build"]));
        step("migrate", || exec::run("supabase", ["db", "push"]));
        step("deploy", || exec::run("vercel", ["deploy", "--prod"]));
        "#,
    );
    let dir = test.path().to_owned();
    let bin = dir.join("bin");
    for tool in ["npm", "supabase", "vercel"] {
        standin(&bin, tool, "done\n");
    }
    let path = path_with(&bin);
    let (dir_guard, out) = test
        .env("PATH", &path)
        .env("STANDIN_FAIL_SUPABASE", "3")
        .expect(1);
    let first = run_ids(&dir)[0].clone();
    let names =
        |calls: Vec<Vec<String>>| calls.into_iter().map(|c| c[0].clone()).collect::<Vec<_>>();
    assert_eq!(names(calls(&bin)), ["npm", "supabase"], "{}", out.stderr);

    let (status, _stdout, stderr) = glow(&dir, &["resume", &first], &[("PATH", &path)]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        names(calls(&bin)),
        ["npm", "supabase", "supabase", "vercel"],
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("succeeded in run {first}")),
        "{stderr}"
    );

    let second = run_ids(&dir).into_iter().find(|id| *id != first).unwrap();
    let journal =
        std::fs::read_to_string(dir.join(".glow/runs").join(&second).join("journal.jsonl"))
            .unwrap();
    let start: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(start["kind"], "run_start");
    assert_eq!(start["resumes"], first.as_str());
    let (status, stdout, stderr) = glow(&dir, &["show", &second], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains(&format!("resumes run {first}")), "{stdout}");
    assert!(stdout.contains("skipped    build"), "{stdout}");
    assert!(stdout.contains("ok         migrate"), "{stdout}");
    drop(dir_guard);
}

#[test]
fn resume_refuses_a_changed_script_unless_forced() {
    let (dir, _out) = Test::new()
        .script("step(\"one\", || 1);\nstep(\"two\", || throw \"boom\");")
        .expect(1);
    let first = run_ids(dir.path())[0].clone();
    std::fs::write(
        dir.path().join("script.rhai"),
        "step(\"one\", || 1);\nstep(\"two\", || 2);\n",
    )
    .unwrap();
    let (status, _stdout, stderr) = glow(dir.path(), &["resume", &first], &[]);
    assert_eq!(status, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("script.rhai changed since run {first}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("sha256 was") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        run_ids(dir.path()).len(),
        1,
        "a refused resume started a run"
    );

    let (status, _stdout, stderr) = glow(dir.path(), &["resume", &first, "--force"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("resuming anyway (--force)"), "{stderr}");
    assert!(
        stderr.contains(&format!("succeeded in run {first}")),
        "{stderr}"
    );
}

#[test]
fn verify_detects_a_changed_byte_a_missing_file_and_a_tampered_bundle() {
    let (dir, _out) = Test::new()
        .file("a.txt", "alpha\n")
        .file("b.txt", "bravo\n")
        .script("step(\"evidence\", || { artifact::put(\"a.txt\"); artifact::put(\"b.txt\"); });")
        .expect(0);
    let dir = dir.path().to_owned();
    let id = run_ids(&dir)[0].clone();
    let (status, _stdout, stderr) = glow(&dir, &["bundle", &id, "-o", "evidence.tar.gz"], &[]);
    assert_eq!(status, 0, "{stderr}");
    let listing = Command::new("tar")
        .args(["tzf", "evidence.tar.gz"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for member in [
        "journal.jsonl",
        "report.md",
        "artifacts/manifest.json",
        "artifacts/a.txt",
        "artifacts/b.txt",
    ] {
        assert!(
            listing.contains(&format!("{id}/{member}")),
            "{member} not in\n{listing}"
        );
    }
    let (status, stdout, stderr) = glow(&dir, &["verify", "evidence.tar.gz"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("ok: 2 artifact(s)"), "{stdout}");

    // A changed byte in the store.
    let store = dir.join(".glow/artifacts").join(&id);
    std::fs::write(store.join("a.txt"), "alphA\n").unwrap();
    let (status, _stdout, stderr) = glow(&dir, &["verify", store.to_str().unwrap()], &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("mismatch: a.txt: sha256 is"), "{stderr}");
    assert!(!stderr.contains("b.txt"), "{stderr}");
    std::fs::remove_file(store.join("b.txt")).unwrap();
    let (status, _stdout, stderr) = glow(&dir, &["verify", store.to_str().unwrap()], &[]);
    assert_eq!(status, 1);
    assert!(stderr.contains("mismatch: b.txt: missing"), "{stderr}");
    assert!(stderr.contains("2 problem(s)"), "{stderr}");

    // A tampered bundle: unpack, change one byte, pack again.
    let unpacked = dir.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(
        Command::new("tar")
            .args(["xzf", "../evidence.tar.gz"])
            .current_dir(&unpacked)
            .status()
            .unwrap()
            .success()
    );
    let tampered = unpacked.join(&id).join("artifacts/b.txt");
    std::fs::write(&tampered, "Bravo\n").unwrap();
    let (status, _stdout, stderr) = glow(&dir, &["verify", "unpacked"], &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("mismatch: b.txt: sha256 is"), "{stderr}");
    assert!(
        Command::new("tar")
            .args(["czf", "../tampered.tar.gz", &id])
            .current_dir(&unpacked)
            .status()
            .unwrap()
            .success()
    );
    let (status, _stdout, stderr) = glow(&dir, &["verify", "tampered.tar.gz"], &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("mismatch: b.txt: sha256 is"), "{stderr}");
}

#[test]
fn runs_and_show_list_what_happened() {
    let (dir, _out) = Test::new()
        .file("page.html", "<html></html>\n")
        .script(
            r#"
            step("build", || exec::run("echo", ["built"]));
            step("evidence", || artifact::put("page.html"));
            step("deploy", || throw "deploy broke");
            "#,
        )
        .args(&["--var", "tag=v9.9.9"])
        .expect(1);
    let dir = dir.path().to_owned();
    let id = run_ids(&dir)[0].clone();
    let (status, stdout, stderr) = glow(&dir, &["runs"], &[]);
    assert_eq!(status, 0, "{stderr}");
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("RUN") && header.contains("SCRIPT") && header.contains("TAG"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{stdout}"));
    for column in ["script.rhai", "live", "failed", "v9.9.9"] {
        assert!(row.contains(column), "{column} missing from {row}");
    }
    assert!(stderr.is_empty(), "{stderr}");

    let (status, stdout, stderr) = glow(&dir, &["show", &id], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("ok         build"), "{stdout}");
    assert!(
        stdout.contains("failed     deploy") && stdout.contains("deploy broke"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[build] exec::run echo built  ok exit 0"),
        "{stdout}"
    );
    let sha = sha256sum(&dir.join("page.html"));
    assert!(
        stdout.contains(&format!("page.html  14 bytes  sha256 {sha}")),
        "{stdout}"
    );
    assert!(stdout.contains("approvals (0)"), "{stdout}");

    let (status, _stdout, stderr) = glow(&dir, &["show", "20990101T000000000Z-dead"], &[]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("unknown run id '20990101T000000000Z-dead'"),
        "{stderr}"
    );
    for command in [
        &["resume", "nope"][..],
        &["bundle", "nope", "-o", "x.tar.gz"][..],
    ] {
        let (status, _stdout, stderr) = glow(&dir, command, &[]);
        assert_eq!(status, 2, "{command:?}: {stderr}");
        assert!(stderr.contains("unknown run id 'nope'"), "{stderr}");
    }
    assert!(!dir.join("x.tar.gz").exists());
}

#[test]
fn a_killed_run_shows_as_interrupted() {
    let test = Test::new().script("step(\"wait\", || exec::run(\"sleep\", [\"3\"]));");
    let dir = test.path().to_owned();
    let mut child = test
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        "the run showing as running in `runs`",
        Duration::from_secs(30),
        || {
            glow(&dir, &["runs"], &[])
                .1
                .contains("running")
                .then_some(())
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let (status, stdout, stderr) = glow(&dir, &["runs"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    let id = run_ids(&dir)[0].clone();
    let (_, stdout, _) = glow(&dir, &["show", &id], &[]);
    assert!(
        stdout.contains("unfinished") && stdout.contains("wait"),
        "{stdout}"
    );
}

#[test]
fn each_run_leaves_the_index_log_empty_and_the_runs_in_the_database() {
    // A process exits before SQLite's checkpoint on close, and the next opener reads and
    // checksums whatever log is left: it must not grow with every run.
    let test = Test::new().script("print(1 + 1);");
    let dir = test.path().to_owned();
    for _ in 0..3 {
        let (status, _, stderr) = glow(&dir, &["script.rhai"], &[]);
        assert_eq!(status, 0, "{stderr}");
        let log = std::fs::metadata(dir.join(".glow/state.db-wal")).map(|m| m.len());
        assert_eq!(log.ok(), Some(0), "the log after a run");
    }
    // The rows are in the database file itself: an independent reader sees every run.
    let count = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('select count(*) from runs').fetchone()[0])",
        )
        .arg(dir.join(".glow/state.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "3");
}

#[test]
fn a_finished_run_restored_from_a_backup_is_indexed_even_when_its_pid_is_alive_here() {
    // Process ids are reused and mean nothing on another machine: a journal that ends with
    // `run_end` is complete, whichever process now has its pid.
    let (finished, out) = Test::new().script("print(1 + 1);").expect(0);
    let id = run_ids(finished.path())[0].clone();
    let journal = out.journal_text();
    let pid = regex::Regex::new(r#""pid":\d+"#).unwrap();
    assert!(pid.is_match(&journal), "{journal}");
    let alive = format!(r#""pid":{}"#, std::process::id());
    let restored = Test::new().script("print(2);");
    let run_dir = restored.path().join(".glow/runs").join(&id);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("journal.jsonl"),
        pid.replace_all(&journal, alive.as_str()).as_ref(),
    )
    .unwrap();
    // The next run opens the index and catches up; `runs` then reads the index alone.
    let (status, _, stderr) = glow(restored.path(), &["script.rhai"], &[]);
    assert_eq!(status, 0, "{stderr}");
    let (status, stdout, stderr) = glow(restored.path(), &["runs"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("ok")),
        "the restored run in `runs`:\n{stdout}"
    );
}

#[test]
fn a_secret_canary_is_absent_from_artifacts_report_and_state_db() {
    let canary = "canary-7f3a9c2e5b1d";
    let (dir, out) = Test::new()
        .script(
            r#"
            step("evidence", || {
                let token = env::secret("DEPLOY_TOKEN");
                artifact::write("notes.txt", `token is ${token}`);
                artifact::write("config.json", #{ token: token, nested: [token] });
                exec::run("echo", [`using ${token}`]);
            });
            "#,
        )
        .env("DEPLOY_TOKEN", canary)
        .expect(0);
    let id = run_ids(dir.path())[0].clone();
    let store = dir.path().join(".glow/artifacts").join(&id);
    let notes = std::fs::read_to_string(store.join("notes.txt")).unwrap();
    assert_eq!(notes, "token is [redacted]");
    let config = std::fs::read_to_string(store.join("config.json")).unwrap();
    assert!(
        config.contains("[redacted]") && !config.contains(canary),
        "{config}"
    );
    let report =
        std::fs::read_to_string(dir.path().join(".glow/runs").join(&id).join("report.md")).unwrap();
    assert!(report.contains("using [redacted]"), "{report}");
    let mut checked = 0;
    for file in files_under(&dir.path().join(".glow")) {
        let bytes = std::fs::read(dir.path().join(".glow").join(&file)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(canary),
            "the secret leaked into {file}"
        );
        checked += 1;
    }
    assert!(files_under(&dir.path().join(".glow")).contains(&"state.db".to_owned()));
    assert!(checked >= 5);
    assert!(!out.stderr.contains(canary) && !out.stdout.contains(canary));
}

#[test]
fn a_corrupt_state_db_is_reported_and_the_run_and_journals_still_work() {
    let test = Test::new().script("step(\"one\", || exec::run(\"echo\", [\"hi\"]));");
    std::fs::create_dir_all(test.path().join(".glow")).unwrap();
    std::fs::write(
        test.path().join(".glow/state.db"),
        "this is not a database, it is garbage ".repeat(200),
    )
    .unwrap();
    let (dir, out) = test.expect(0);
    assert!(
        out.stderr
            .contains("warning: the run index .glow/state.db is unreadable"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("mv .glow/state.db .glow/state.db.broken"),
        "{}",
        out.stderr
    );
    assert_eq!(out.journal().last().unwrap()["kind"], "run_end");
    let id = run_ids(dir.path())[0].clone();

    let (status, stdout, stderr) = glow(dir.path(), &["runs"], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("is unreadable") && stderr.contains("reading the journals"),
        "{stderr}"
    );
    assert!(stdout.contains(&id) && stdout.contains(" ok "), "{stdout}");
    let (status, stdout, stderr) = glow(dir.path(), &["show", &id], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("ok         one"), "{stdout}");
}

#[test]
fn the_report_is_the_deployment_log_and_goes_to_the_github_step_summary() {
    let test = Test::new().file("a.txt", "alpha\n").script(
        r#"
            step("build", || {
                exec::run("sh", ["-c", "for i in $(seq 1 100); do echo line-$i; done"]);
                artifact::put("a.txt");
            });
            "#,
    );
    let summary = test.path().join("summary.md");
    let summary_text = summary.to_str().unwrap().to_owned();
    let (dir, _out) = test.env("GITHUB_STEP_SUMMARY", &summary_text).expect(0);
    let id = run_ids(dir.path())[0].clone();
    let report =
        std::fs::read_to_string(dir.path().join(".glow/runs").join(&id).join("report.md")).unwrap();
    assert!(
        report.starts_with(&format!("# glow-run {id}: ok")),
        "{report}"
    );
    assert!(report.contains("| build | ok |"), "{report}");
    assert!(report.contains("## Effects"), "{report}");
    let sha = sha256sum(&dir.path().join("a.txt"));
    assert!(
        report.contains(&format!("| a.txt | 6 | `{sha}` | build |")),
        "{report}"
    );
    // Output excerpts: the head and the tail, the middle elided.
    assert!(
        report.contains("line-1\n") && report.contains("line-100\n"),
        "{report}"
    );
    assert!(
        !report.contains("line-50\n") && report.contains("lines omitted"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap().trim(),
        report.trim()
    );

    let (_dir, out) = Test::new()
        .script("step(\"deploy\", || exec::run(\"vercel\", [\"deploy\"]));")
        .arg("--dry-run")
        .expect(0);
    let id = run_ids(&out.dir)[0].clone();
    let report =
        std::fs::read_to_string(out.dir.join(".glow/runs").join(&id).join("report.md")).unwrap();
    assert!(
        report.contains("## Plan") && report.contains("`exec run vercel deploy`"),
        "{report}"
    );
    assert!(
        report.contains("programs not on PATH: vercel") || report.contains("programs: vercel"),
        "{report}"
    );
}
