//! Security hardening (issue 14), each item through the real binary: secrets in every form
//! they take never reach anything the host writes (a canary grep over stdout, stderr, the
//! journal, the report, state.db, the manifest, artifact names and a bundle's members), exec
//! and SQL policy that cannot be sidestepped, artifact permissions, and scripts or glow.toml
//! files that used to crash or hang the host.

use crate::support::postgres;
use crate::support::{BIN, Finished, Test, hermetic, wait_with_timeout};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod fuzz;

/// A secret with the characters encoders treat specially.
const SECRET: &str = "Zq7/canary@X9pL\"2\\mV";

const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
QyNTUxOQAAACBjYW5hcnlwZW1rZXljYW5hcnlwZW1rZXljYW5hcnlwZW1rZXkxMjM0NTY3\n\
-----END OPENSSH PRIVATE KEY-----\n";

/// Texts that must appear nowhere: the secret, pieces of it, its encodings, the PEM body.
fn canaries() -> Vec<String> {
    let mut canaries = vec![
        SECRET.to_owned(),
        "Zq7/c".to_owned(),
        "canary@X9".to_owned(),
        STANDARD.encode(SECRET)[..16].to_owned(),
        hex::encode(SECRET)[..16].to_owned(),
    ];
    canaries.extend(PEM.lines().skip(1).take(2).map(|l| l[..24].to_owned()));
    canaries
}

/// Runs `glow-run ARGS` in `dir` and returns (status, stdout, stderr).
fn glow(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = wait_with_timeout(command.spawn().unwrap(), Duration::from_secs(60));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn find(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Every file and file name under `dir` except `inputs`, plus a bundle of the last run, plus
/// the given outputs: none may hold a canary.
fn assert_no_canary(finished: &Finished, inputs: &[&str]) {
    let run_id = finished.journal()[0]["run"].as_str().unwrap().to_owned();
    let (status, _, stderr) = glow(&finished.dir, &["bundle", &run_id, "-o", "b.tar.gz"]);
    assert_eq!(status, 0, "bundle: {stderr}");
    let mut texts: Vec<(String, Vec<u8>)> = vec![
        ("stdout".into(), finished.stdout.clone().into_bytes()),
        ("stderr".into(), finished.stderr.clone().into_bytes()),
    ];
    let bundle = std::fs::File::open(finished.dir.join("b.tar.gz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        texts.push((
            format!("bundle member name {name}"),
            name.clone().into_bytes(),
        ));
        texts.push((format!("bundle member {name}"), bytes));
    }
    let mut stack = vec![finished.dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(&finished.dir)
                .unwrap()
                .display()
                .to_string();
            if inputs.contains(&relative.as_str()) || relative == "b.tar.gz" {
                continue;
            }
            texts.push((
                format!("file name {relative}"),
                relative.clone().into_bytes(),
            ));
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                texts.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    for canary in canaries() {
        for (place, bytes) in &texts {
            assert!(
                !find(bytes, &canary),
                "{canary:?} leaked in {place}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

fn percent_keeping_slash(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '@' => "%40".to_owned(),
            '"' => "%22".to_owned(),
            '\\' => "%5C".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[test]
fn child_output_in_every_form_is_redacted_though_never_declared() {
    let json = serde_json::to_string(SECRET).unwrap();
    let finished = Test::new()
        .env("RELEASE_TOKEN", SECRET)
        .env("DEPLOY_KEY", PEM)
        .env("FORM_JSON", &json)
        .env("FORM_JSON_SLASH", &json.replace('/', "\\/"))
        .env("FORM_JSON_UNICODE", &json.replace('a', "\\u0061"))
        .env("FORM_PERCENT", &percent_keeping_slash(SECRET))
        .env("FORM_HEX", &hex::encode(SECRET))
        .script(
            r#"
            step("leak", || {
                exec::sh(`printf '%s\n' "$RELEASE_TOKEN"`);
                exec::sh(`printf 'prefix:%s' "$RELEASE_TOKEN" | base64 -w 20`);
                exec::sh(`printf 'some longer prefix text %s and more' "$RELEASE_TOKEN" | base64`);
                exec::sh(`printf '%s\n' "$RELEASE_TOKEN" | fold -w 5`);
                exec::sh(`printf '%s\n' "$FORM_JSON" "$FORM_JSON_SLASH" "$FORM_JSON_UNICODE" "$FORM_PERCENT" "$FORM_HEX"`);
                exec::sh(`printf '%s\n' "$RELEASE_TOKEN" | grep --color=always canary`);
                exec::sh(`printf 'key:\n%s\n' "$DEPLOY_KEY"`);
                exec::sh(`printf '%s\n' "$RELEASE_TOKEN" >&2`);
                // Split over two lines with a pause between: the first part is held back.
                exec::sh("printf '%s\\n' \"${RELEASE_TOKEN%%@*}@\"; sleep 0.3; printf '%s\\n' \"${RELEASE_TOKEN#*@}\"");
                exec::sh(`printf '%s\n' "$CHILD_TOKEN"`, #{ env: #{ CHILD_TOKEN: "Zq7/c" + "anary@X9pL-given" } });
            });
            "#,
        )
        .status(0);
    let lines: Vec<String> = finished
        .journal()
        .iter()
        .filter(|e| e["kind"] == "output")
        .map(|e| e["line"].as_str().unwrap().to_owned())
        .collect();
    assert!(lines.iter().any(|l| l == "key:"), "{lines:?}");
    assert!(
        lines.iter().filter(|l| l.contains("[redacted]")).count() >= 12,
        "{lines:?}"
    );
    assert_no_canary(&finished, &["script.rhai"]);
}

#[test]
fn secrets_in_script_output_artifacts_names_and_blobs_are_redacted() {
    let finished = Test::new()
        .env("RELEASE_TOKEN", SECRET)
        .args(&["--format", "json"])
        .script(
            r#"
            let token = env::get("RELEASE_TOKEN");
            step("evidence", || {
                print(token);
                log::info("token=" + token);
                artifact::write("notes.txt", "the token is " + token);
                artifact::write("blob.bin", blob(3, 0) + token.to_blob());
                artifact::write("name-" + token + ".txt", "x");
                artifact::write("data.json", #{ token: token, nested: [token] });
                throw "failed with " + token;
            });
            "#,
        )
        .status(1);
    assert!(
        finished.stderr.contains("failed with [redacted]"),
        "{}",
        finished.stderr
    );
    let artifacts: Vec<String> = finished
        .journal()
        .iter()
        .filter(|e| e["kind"] == "artifact")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        artifacts.iter().any(|n| n.starts_with("name-[redacted]")),
        "{artifacts:?}"
    );
    assert_no_canary(&finished, &["script.rhai"]);
}

#[test]
fn a_database_url_password_with_slash_and_at_is_redacted_before_connect() {
    let url = "postgres://app:bad@pass/word@db.internal:5432/app";
    let finished = Test::new()
        .env("DATABASE_URL", url)
        .script(
            r#"
            print(env::get("DATABASE_URL"));
            exec::sh(`echo "$DATABASE_URL"`);
            print("see postgres://other:hunter2x@h/db");
            "#,
        )
        .status(0);
    for leaked in ["bad@pass", "pass/word@", "hunter2x"] {
        assert!(!finished.stdout.contains(leaked), "{}", finished.stdout);
        assert!(!finished.journal_text().contains(leaked));
    }
    assert!(
        finished
            .stdout
            .contains("postgres://app:[redacted]@db.internal:5432/app")
    );
}

#[test]
fn a_secret_equal_to_a_journal_key_keeps_journal_index_and_words_intact() {
    let finished = Test::new()
        .env("VALUE_A", "run")
        .env("VALUE_B", "kind")
        .env("VALUE_C", "book")
        .script(
            r#"
            env::secret("VALUE_A");
            env::secret("VALUE_B");
            env::secret("VALUE_C");
            step("run", || print("facebook, a book, a kind of run"));
            "#,
        )
        .status(0);
    assert!(
        finished
            .stdout
            .contains("facebook, a [redacted], a [redacted] of [redacted]"),
        "{}",
        finished.stdout
    );
    let journal = finished.journal();
    assert!(
        journal
            .iter()
            .all(|e| e.get("kind").is_some() && e.get("run").is_some())
    );
    assert_eq!(journal.last().unwrap()["outcome"], "ok");
    let (status, stdout, stderr) = glow(&finished.dir, &["runs"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("ok") && !stdout.contains("interrupted"),
        "{stdout}"
    );
}

#[test]
fn short_secrets_are_an_error_naming_the_variable_or_a_warning() {
    let finished = Test::new()
        .env("PIN", "ab")
        .script(r#"step("s", || env::secret("PIN"));"#)
        .status(1);
    assert!(
        finished
            .stderr
            .contains("env::secret: PIN is 2 character(s) long"),
        "{}",
        finished.stderr
    );
    let finished = Test::new()
        .env("TINY_TOKEN", "x")
        .script(r#"print("ok");"#)
        .status(0);
    assert!(
        finished
            .stderr
            .contains("TINY_TOKEN looks like a credential but its value is 1 character(s) long"),
        "{}",
        finished.stderr
    );
}

#[test]
fn exec_allow_compares_real_paths_and_refuses_symlink_tricks() {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    for program in ["./echo", "evil/../evil/echo", "ABSOLUTE/echo"] {
        let test = Test::new().file("glow.toml", "[exec]\nallow = [\"echo\"]\n");
        let dir = test.path().to_owned();
        std::fs::create_dir_all(dir.join("evil")).unwrap();
        std::os::unix::fs::symlink(&sh, dir.join("echo")).unwrap();
        std::os::unix::fs::symlink(&sh, dir.join("evil/echo")).unwrap();
        let program = program.replace("ABSOLUTE", &dir.display().to_string());
        let finished = test
            .script(&format!(
                r#"exec::run("{program}", ["-c", "touch pwned"]);"#
            ))
            .status(1);
        assert!(
            finished.stderr.contains("policy refuses to run")
                && finished.stderr.contains("its real path")
                && finished.stderr.contains("is not in [exec] allow"),
            "{program}: {}",
            finished.stderr
        );
        assert!(!dir.join("pwned").exists(), "{program} ran");
    }
    let echo = std::fs::canonicalize(which("echo")).unwrap();
    let finished = Test::new()
        .file("glow.toml", "[exec]\nallow = [\"echo\"]\n")
        .script(&format!(
            r#"print(exec::run("echo", ["by name"]).stdout); print(exec::run("{}", ["by path"]).stdout);"#,
            echo.display()
        ))
        .status(0);
    assert!(finished.stdout.contains("by name") && finished.stdout.contains("by path"));
}

fn which(program: &str) -> std::path::PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

#[test]
fn postgres_read_only_sessions_refuse_side_effects_and_send_nothing() {
    let db = postgres::database();
    let marker = std::env::temp_dir().join(format!("glow-copy-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let statements = [
        (
            format!("copy (select 1) to program 'touch {}'", marker.display()),
            "COPY is not a read",
        ),
        (
            format!("copy (select 1) to '{}'", marker.display()),
            "COPY is not a read",
        ),
        (
            "select pg_advisory_lock(42)".to_owned(),
            "pg_advisory_lock() has effects",
        ),
        (
            "select pg_reload_conf()".to_owned(),
            "pg_reload_conf() has effects",
        ),
        (
            "select pg_switch_wal()".to_owned(),
            "pg_switch_wal() has effects",
        ),
        (
            "select pg_create_restore_point('x')".to_owned(),
            "pg_create_restore_point() has effects",
        ),
        (
            "select pg_stat_reset()".to_owned(),
            "pg_stat_reset() has effects",
        ),
    ];
    for (policy, flag) in [
        ("[sql]\nallow_writes = false\n", None),
        ("", Some("--dry-run")),
    ] {
        for (sql, rule) in &statements {
            let mut test = Test::new()
                .env("DB", &db.url)
                .file("glow.toml", policy)
                .script(&format!(
                    "let db = sql::connect(env::get(\"DB\")); db.query(\"{sql}\");"
                ));
            if let Some(flag) = flag {
                test = test.arg(flag);
            }
            let finished = test.status(1);
            assert!(finished.stderr.contains(rule), "{sql}: {}", finished.stderr);
            assert!(
                finished.stderr.contains("nothing was sent"),
                "{}",
                finished.stderr
            );
            let denied = finished
                .journal()
                .into_iter()
                .any(|e| e["kind"] == "effect" && e["outcome"] == "denied");
            assert!(denied, "{sql}: the refusal is journaled");
        }
    }
    assert!(!marker.exists(), "COPY TO PROGRAM ran");
    let cluster = postgres::cluster();
    let locks = cluster.psql(
        &db.name,
        "select count(*) from pg_locks l join pg_database d on d.oid = l.database \
         where l.locktype = 'advisory' and d.datname = current_database()",
    );
    assert_eq!(locks.trim(), "0");
    let finished = Test::new()
        .env("DB", &db.url)
        .arg("--dry-run")
        .script(r#"let db = sql::connect(env::get("DB")); print(db.query_one("select 40 + 2 as n").n);"#)
        .status(0);
    assert!(finished.stdout.contains("42"));
}

/// A WAL-mode SQLite file, closed cleanly (sqlx directly, so the last close checkpoints).
fn make_wal_database(path: &Path) {
    use sqlx::{Connection, Executor};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        conn.execute("create table t (v int); insert into t values (7)")
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn sqlite_dry_runs_refuse_vacuum_into_and_leave_no_wal_files() {
    let test = Test::new();
    let db = test.path().join("app.db");
    make_wal_database(&db);
    // Closing the last connection checkpoints and removes the WAL files.
    assert!(!test.path().join("app.db-wal").exists());
    let header = std::fs::read(&db).unwrap();
    assert_eq!(header[18], 2, "the file is in WAL mode");
    let finished = test
        .arg("--dry-run")
        .script(&format!(
            r#"let db = sql::connect("sqlite:{}"); print(db.query_one("select v from t").v); db.query("vacuum into 'copy.db'");"#,
            db.display()
        ))
        .status(1);
    assert!(finished.stdout.contains('7'), "{}", finished.stdout);
    assert!(finished.stderr.contains("VACUUM"), "{}", finished.stderr);
    assert!(!finished.dir.join("copy.db").exists());
    assert!(
        !finished.dir.join("app.db-wal").exists(),
        "a dry run left app.db-wal"
    );
    assert!(
        !finished.dir.join("app.db-shm").exists(),
        "a dry run left app.db-shm"
    );
}

#[test]
fn artifact_put_never_widens_permissions_and_refuses_non_regular_files() {
    let test = Test::new()
        .file("secret/shadow", "root:x\n")
        .file("secret/open", "ok\n");
    std::fs::set_permissions(
        test.path().join("secret/shadow"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        test.path().join("secret/open"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink(test.path().join("secret"), test.path().join("link")).unwrap();
    let fifo = test.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let finished = test
        .script(
            r#"
            artifact::put("link", "copy");
            for path in ["/dev/zero", "pipe"] {
                try { artifact::put(path); print("stored " + path); } catch (e) { print("put refused: " + e); }
                try { fs::read(path); print("read " + path); } catch (e) { print("read refused: " + e); }
            }
            "#,
        )
        .status(0);
    let store = std::fs::read_dir(finished.dir.join(".glow/artifacts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = |name: &str| {
        std::fs::metadata(store.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("copy/shadow"), 0o640);
    assert_eq!(mode("copy/open"), 0o600);
    assert_eq!(
        finished.stdout.matches("put refused").count(),
        2,
        "{}",
        finished.stdout
    );
    assert_eq!(
        finished.stdout.matches("read refused").count(),
        2,
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains("not a regular file (a character device)")
    );
    assert!(finished.stdout.contains("not a regular file (a FIFO)"));
}

#[test]
fn fs_read_and_put_have_size_caps() {
    let test = Test::new();
    let big = std::fs::File::create(test.path().join("big.txt")).unwrap();
    big.set_len(64 * 1024 * 1024 + 1).unwrap();
    let huge = std::fs::File::create(test.path().join("huge.bin")).unwrap();
    huge.set_len(16 * 1024 * 1024 * 1024 + 1).unwrap();
    let finished = test
        .script(
            r#"
            try { fs::read("big.txt"); } catch (e) { print(e); }
            try { artifact::put("huge.bin"); } catch (e) { print(e); }
            "#,
        )
        .status(0);
    assert!(
        finished
            .stdout
            .contains("is larger than the 64.0 MiB this reads"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("a stored file may be"),
        "{}",
        finished.stdout
    );
}

#[test]
fn huge_allocations_end_with_the_memory_limit_and_a_complete_journal() {
    for script in [
        r#"let s = "a"; s.pad(1000000000000000, "b");"#,
        r#"let s = "a"; s.pad(1000000000000000, 'b');"#,
        r#"let b = blob(1000000000000000);"#,
        r#"let b = blob(); b.pad(1000000000000000, 0);"#,
        r#"let a = []; a.pad(100000000000000, 0);"#,
    ] {
        let finished = Test::new().script(script).status(1);
        assert!(
            finished.stderr.contains("memory limit exceeded"),
            "{script}: {}",
            finished.stderr
        );
        let journal = finished.journal();
        let end = journal.last().unwrap();
        assert_eq!(end["kind"], "run_end", "{script}");
        assert_eq!(end["exit_code"], 1);
    }
    let finished = Test::new()
        .script(r#"let s = "ab"; s.pad(5, "xy"); s.pad(7, '!'); print(s);"#)
        .status(0);
    assert!(finished.stdout.contains("abxyx!!"), "{}", finished.stdout);
}

#[test]
fn out_of_range_sql_timeouts_are_clear_errors() {
    for timeout in ["30d", "99999999999999999s"] {
        let finished = Test::new()
            .script(&format!(
                r#"sql::connect("sqlite:x.db", #{{ timeout: "{timeout}" }});"#
            ))
            .status(1);
        assert!(
            finished.stderr.contains("option 'timeout'") && !finished.stderr.contains("panicked"),
            "{timeout}: {}",
            finished.stderr
        );
    }
}

#[test]
fn limits_out_of_range_and_a_glow_toml_on_dev_zero_are_config_errors() {
    for (limits, key) in [
        (
            "expression_depth = 0",
            "expression_depth = 0 is out of range",
        ),
        (
            "expression_depth = 1000000000",
            "expression_depth = 1000000000 is out of range",
        ),
        ("expression_depth = 1e9", "expression_depth"),
        (
            "call_levels = 100000000",
            "call_levels = 100000000 is out of range",
        ),
        ("max_operations = 0", "max_operations = 0 is out of range"),
        ("memory = 0", "memory = 0 B is out of range"),
        ("step_timeout = \"0s\"", "step_timeout"),
        ("variables = 0", "variables = 0 is out of range"),
        ("modules = 0", "modules = 0 is out of range"),
    ] {
        let finished = Test::new()
            .file("glow.toml", &format!("[limits]\n{limits}\n"))
            .script("print(1);")
            .status(2);
        assert!(
            finished.stderr.contains(key),
            "{limits}: {}",
            finished.stderr
        );
    }
    // The largest values of the documented ranges run deep nesting without overflowing.
    let finished = Test::new()
        .file(
            "glow.toml",
            "[limits]\ncall_levels = 1000\nexpression_depth = 1000\n",
        )
        .script("fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } } print(f(990));")
        .status(0);
    assert!(finished.stdout.contains("990"));
    let test = Test::new().script("print(1);");
    std::os::unix::fs::symlink("/dev/zero", test.path().join("glow.toml")).unwrap();
    let finished = test.timeout(Duration::from_secs(20)).status(2);
    assert!(
        finished.stderr.contains("not a regular file"),
        "{}",
        finished.stderr
    );
}
