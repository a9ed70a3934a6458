//! `sql`: types, migrations, dry runs, policy, redaction, timeouts and errors, on a real
//! PostgreSQL cluster (tests/support/postgres.rs) and on SQLite files.

use crate::support::postgres::{self, PASSWORD};
use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

const MIGRATIONS: [&str; 4] = [
    "20250926090000_tasks_documents_notifications.sql",
    "20250926181500_activity_event_catalog_rls.sql",
    "20251115122000_web_fetch_cache.sql",
    "20251115123000_web_fetch_cache_retention.sql",
];

/// Copies the runbook's four seed migrations (the sample workspace's) into `migrations/`.
fn with_migrations(test: Test) -> Test {
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prisma-glow/supabase/migrations");
    let target = test.path().join("migrations");
    std::fs::create_dir_all(&target).unwrap();
    for name in MIGRATIONS {
        std::fs::copy(source.join(name), target.join(name)).unwrap();
    }
    test
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Runs glow-run in an existing dir (for several runs over the same files).
fn glow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = std::process::Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied());
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = wait_with_timeout(command.spawn().unwrap(), Duration::from_secs(60));
    Finished {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        dir: dir.to_owned(),
        keep: None,
    }
}

/// Every output of a run: stdout, stderr and every file under .glow (journals, reports, state).
fn all_output(out: &Finished) -> String {
    fn walk(dir: &Path, text: &mut String, files: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, text, files);
            } else {
                *files += 1;
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    let mut text = format!("{}\n{}", out.stdout, out.stderr);
    let mut files = 0;
    walk(&out.dir.join(".glow"), &mut text, &mut files);
    assert!(
        !out.journal_text().is_empty() && files > 0,
        "no journal written"
    );
    text
}

#[test]
fn postgres_types_round_trip() {
    let db = postgres::database();
    let out = Test::new()
        .env("DB", &db.url)
        .script(
            r#"
            let db = sql::connect(env::get("DB"));
            let row = db.query_one(`
                select 1::int2 as i2, 2::int4 as i4, 9007199254740993::int8 as i8,
                       1.5::float4 as f4, 0.1::float8 as f8,
                       12.50::numeric(10,2) as n_float, 12345678901234567890.123456789::numeric as n_big,
                       42::numeric as n_int,
                       'héllo'::text as t, 'v'::varchar(3) as vc, true as b,
                       '2025-11-15 12:00:00.5+02'::timestamptz as tz, '2025-11-15 12:00:00'::timestamp as ts,
                       '2025-11-15'::date as d,
                       '{"a": [1, 2], "b": null}'::jsonb as jb, '[1, "x"]'::json as j,
                       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u,
                       '\x00ff10'::bytea as by, null::text as nothing,
                       array[1, 2, null]::int4[] as ints, array['a', null]::text[] as texts,
                       array[1.25, null]::numeric[] as nums, array['2025-01-02T03:04:05Z'::timestamptz] as tss,
                       array['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid] as uuids
            `);
            let by = row.remove("by");
            print(json::stringify(row));
            print(type_of(by) + " " + by.len() + " " + by[1]);

            // Parameters go back out with the same types.
            db.execute("create table t (i int8, f float8, t text, b bool, j jsonb, by bytea, ts timestamptz, n int4, arr int8[], tags text[])");
            db.execute("insert into t values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                       [7, 2.25, "it's; drop table t; --", false, #{k: [1, #{z: "y"}]}, blob(2, 255), time::parse("2025-11-15T12:00:00Z"), (), [1, 2], ["x", ()]]);
            print(json::stringify(db.query("select i, f, t, b, j, ts, n, arr, tags from t")));
            print(db.query_one("select by from t").by == blob(2, 255));
            "#,
        )
        .status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let row: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let expected = serde_json::json!({
        "i2": 1, "i4": 2, "i8": 9007199254740993_i64, "f4": 1.5, "f8": 0.1,
        "n_float": 12.5, "n_big": "12345678901234567890.123456789", "n_int": 42,
        "t": "héllo", "vc": "v", "b": true,
        "tz": "2025-11-15T10:00:00.500Z", "ts": "2025-11-15T12:00:00Z", "d": "2025-11-15",
        "jb": {"a": [1, 2], "b": null}, "j": [1, "x"],
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "nothing": null,
        "ints": [1, 2, null], "texts": ["a", null], "nums": [1.25, null],
        "tss": ["2025-01-02T03:04:05Z"], "uuids": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    });
    assert_eq!(row, expected, "{}", out.stdout);
    assert_eq!(lines[1], "blob 3 255");
    let back: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(
        back,
        serde_json::json!([{ "i": 7, "f": 2.25, "t": "it's; drop table t; --", "b": false,
                             "j": {"k": [1, {"z": "y"}]}, "ts": "2025-11-15T12:00:00Z", "n": null,
                             "arr": [1, 2], "tags": ["x", null] }])
    );
    assert_eq!(lines[3], "true");
}

#[test]
fn sqlite_types_round_trip() {
    let (_dir, out) = Test::new()
        .script(
            r#"
            let db = sql::connect("sqlite:app.db");
            db.execute("create table t (i integer, f real, t text, b boolean, by blob, j text, ts text, n integer)");
            db.execute("insert into t values (?, ?, ?, ?, ?, ?, ?, ?)",
                       [9007199254740993, 0.1, "héllo", true, blob(3, 7), #{a: [1, 2]}, time::parse("2025-11-15T12:00:00Z"), ()]);
            let row = db.query_one("select * from t");
            let by = row.remove("by");
            print(json::stringify(row));
            print(type_of(by) + " " + by.len() + " " + by[0]);
            print(json::stringify(json::parse(row.j)));
            print(json::stringify(db.query("select count(*) as n, 1.5 as x, null as z, 'a' || 'b' as s from t")));
            "#,
        )
        .expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let row: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        row,
        serde_json::json!({ "i": 9007199254740993_i64, "f": 0.1, "t": "héllo", "b": true,
                            "j": "{\"a\":[1,2]}", "ts": "2025-11-15T12:00:00Z", "n": null })
    );
    assert_eq!(lines[1], "blob 3 7");
    assert_eq!(lines[2], r#"{"a":[1,2]}"#);
    assert_eq!(lines[3], r#"[{"n":1,"s":"ab","x":1.5,"z":null}]"#);
    assert!(out.dir.join("app.db").exists());
}

#[test]
fn unsupported_type_is_an_error_naming_column_and_type() {
    let db = postgres::database();
    let out = Test::new()
        .env("DB", &db.url)
        .script(r#"let db = sql::connect(env::get("DB")); db.query("select interval '1 day' as wait");"#)
        .status(1);
    assert!(
        out.stderr.contains("column 'wait' (INTERVAL)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("::text"), "{}", out.stderr);
}

#[test]
fn migrate_applies_fixtures_in_order_then_nothing() {
    let db = postgres::database();
    let test = with_migrations(Test::new());
    let sums: Vec<String> = MIGRATIONS
        .iter()
        .map(|name| sha256_file(&test.path().join("migrations").join(name)))
        .collect();
    let script = r#"
        let db = sql::connect(env::get("DB"));
        print(json::stringify(db.pending("migrations")));
        let result = db.migrate("migrations");
        print(json::stringify(result));
        let again = db.migrate("migrations");
        print(json::stringify(again));
        print(json::stringify(db.pending("migrations")));
        let metrics = db.query_one("select * from web_fetch_cache_metrics");
        print(json::stringify(metrics));
    "#;
    let (_dir, out) = test.env("DB", &db.url).script(script).expect(0);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed: Vec<serde_json::Value> = MIGRATIONS
        .iter()
        .zip(&sums)
        .map(|(name, sum)| serde_json::json!({ "name": name, "sha256": sum }))
        .collect();
    assert_eq!(lines[0], serde_json::json!(listed));
    assert_eq!(lines[1]["applied"], serde_json::json!(listed));
    assert_eq!(lines[1]["planned"], false);
    let hash_input: String = MIGRATIONS
        .iter()
        .zip(&sums)
        .map(|(n, s)| format!("{n}\t{s}\n"))
        .collect();
    let expected_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(hash_input.as_bytes()))
    };
    assert_eq!(lines[1]["hash"], expected_hash);
    assert_eq!(lines[2]["applied"], serde_json::json!([]));
    assert_eq!(lines[2]["hash"], expected_hash);
    assert_eq!(lines[3], serde_json::json!([]));
    assert_eq!(lines[4]["total_entries"], 0);
    assert_eq!(lines[4]["oldest_fetched_at"], serde_json::Value::Null);
    assert_eq!(lines[4]["retention_days"], 14);

    // The history records each file in order, with checksum and this run's id.
    let cluster = postgres::cluster();
    let history = cluster.psql(
        &db.name,
        "select name, sha256, run_id <> '' from glow_migrations order by applied_at, name",
    );
    let expected: String = MIGRATIONS
        .iter()
        .zip(&sums)
        .map(|(n, s)| format!("{n}|{s}|t\n"))
        .collect();
    assert_eq!(history, expected);
    // RLS is on for the activity tables.
    assert_eq!(
        cluster.psql(&db.name, "select relname, relrowsecurity from pg_class where relname like 'activity_%' and relkind = 'r' order by 1"),
        "activity_event_catalog|t\nactivity_log|t\n"
    );

    // The journal carries the migration hash and the applied list for the deployment log.
    let journal = out.journal();
    let summaries: Vec<&serde_json::Value> = journal
        .iter()
        .filter(|e| e["kind"] == "effect" && e.get("migration_hash").is_some())
        .collect();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0]["migration_hash"], expected_hash);
    assert_eq!(summaries[0]["applied"].as_array().unwrap().len(), 4);
    assert_eq!(summaries[1]["applied"], serde_json::json!([]));
    let applied: Vec<&str> = journal
        .iter()
        .filter(|e| e["kind"] == "effect" && e["action"] == "migrate")
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(applied, MIGRATIONS);
}

#[test]
fn changed_applied_migration_is_an_error_naming_it() {
    let db = postgres::database();
    let test = with_migrations(Test::new()).file(
        "migrate.rhai",
        r#"sql::connect(env::get("DB")).migrate("migrations");"#,
    );
    let dir = test.dir;
    let env = [("DB", db.url.as_str())];
    assert_eq!(glow(dir.path(), &["migrate.rhai"], &env).status, 0);
    let changed = dir.path().join("migrations").join(MIGRATIONS[2]);
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("\n-- edited after it was applied\n");
    std::fs::write(&changed, text).unwrap();
    let out = glow(dir.path(), &["migrate.rhai"], &env);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "migration {} was applied with sha256",
            MIGRATIONS[2]
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("must not change"), "{}", out.stderr);
}

#[test]
fn migrate_on_sqlite_applies_and_records() {
    let test = Test::new();
    for (name, text) in [
        (
            "001_people.sql",
            "create table people (id integer primary key, name text not null);",
        ),
        (
            "002_seed.sql",
            "insert into people (name) values ('ada'); insert into people (name) values ('grace');",
        ),
    ] {
        std::fs::create_dir_all(test.path().join("m")).unwrap();
        std::fs::write(test.path().join("m").join(name), text).unwrap();
    }
    let out = test
        .script(
            r#"
            let db = sql::connect("sqlite:app.db");
            print(db.migrate("m").applied.len());
            print(db.migrate("m").applied.len());
            print(db.query_one("select count(*) as n from people").n);
            print(db.query("select name from glow_migrations order by name").map(|r| r.name));
            "#,
        )
        .status(0);
    assert_eq!(
        out.stdout,
        "2\n0\n2\n[\"001_people.sql\", \"002_seed.sql\"]\n"
    );
}

#[test]
fn dry_run_leaves_postgres_unchanged_and_plans_each_migration() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    cluster.psql(
        &db.name,
        "create table keep (n int); insert into keep values (1), (2)",
    );
    let before = cluster.dump(&db.name);
    let (_dir, out) = with_migrations(Test::new())
        .env("DB", &db.url)
        .args(&["--dry-run", "--format", "json"])
        .script(
            r#"
            let db = sql::connect(env::get("DB"));
            let result = db.migrate("migrations");
            print(json::stringify(#{ n: result.applied.len(), planned: result.planned, hash: result.hash.len() }));
            print(db.execute("delete from keep"));
            print(db.query_one("select count(*) as n from keep").n);
            let value = db.transaction(|tx| { tx.execute("insert into keep values (3)"); tx.query_one("select sum(n) as s from keep").s });
            print(value);
            "#,
        )
        .expect(0);
    assert_eq!(
        cluster.dump(&db.name),
        before,
        "the dry run changed the database"
    );
    let prints: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "output" && e["stream"] == "script")
        .map(|e| e["line"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        prints,
        [r#"{"hash":64,"n":4,"planned":true}"#, "0", "2", "3"],
        "{}",
        out.stdout
    );
    // The plan lists each migration by name, then the writes.
    let journal = out.journal();
    let plan = journal
        .iter()
        .find(|e| e["kind"] == "plan")
        .expect("a plan event");
    let targets: Vec<String> = plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    let mut expected: Vec<String> = MIGRATIONS.iter().map(|m| format!("migrate {m}")).collect();
    expected.push("execute delete from keep".into());
    expected.push(format!(
        "transaction {}",
        db.url.replace(&format!(":{PASSWORD}"), "")
    ));
    expected.push("execute insert into keep values (3)".into());
    assert_eq!(targets, expected);
}

#[test]
fn write_inside_query_fails_in_a_dry_run() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    cluster.psql(
        &db.name,
        "create table keep (n int); insert into keep values (1)",
    );
    let out = Test::new()
        .env("DB", &db.url)
        .arg("--dry-run")
        .script(
            r#"let db = sql::connect(env::get("DB")); db.query("delete from keep returning n");"#,
        )
        .status(1);
    assert!(
        out.stderr.contains("read-only transaction"),
        "{}",
        out.stderr
    );
    assert_eq!(cluster.psql(&db.name, "select count(*) from keep"), "1\n");

    // SQLite: the connection is read-only.
    let dir = Test::new()
        .file("setup.rhai", r#"sql::connect("sqlite:app.db").execute("create table keep (n int); insert into keep values (1)");"#)
        .file("check.rhai", r#"sql::connect("sqlite:app.db").query("delete from keep returning n");"#)
        .dir;
    assert_eq!(glow(dir.path(), &["setup.rhai"], &[]).status, 0);
    let file = dir.path().join("app.db");
    let before = std::fs::read(&file).unwrap();
    let out = glow(dir.path(), &["--dry-run", "check.rhai"], &[]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("readonly") || out.stderr.contains("read-only"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn dry_run_does_not_create_a_sqlite_file() {
    let out = Test::new()
        .arg("--dry-run")
        .file("m/001.sql", "create table a (n int);")
        .script(
            r#"
            let db = sql::connect("sqlite:new.db");
            print(db.pending("m").len());
            print(db.migrate("m").planned);
            "#,
        )
        .status(0);
    assert_eq!(out.stdout, "1\ntrue\n");
    assert!(!out.dir.join("new.db").exists());
}

#[test]
fn dry_run_without_a_database_url_still_plans() {
    let (_dir, out) = with_migrations(Test::new())
        .arg("--dry-run")
        .script(
            r#"
            let db = sql::connect(env::get("DATABASE_URL"));
            print(db.query("select 1").len());
            print(db.migrate("migrations").applied.len());
            "#,
        )
        .expect(0);
    assert_eq!(out.stdout, "0\n4\n");
    assert!(out.stderr.contains("DATABASE_URL"), "{}", out.stderr);
    let journal = out.journal();
    let plan = journal.iter().find(|e| e["kind"] == "plan").unwrap();
    assert_eq!(plan["effects"].as_array().unwrap().len(), 4);
}

#[test]
fn policy_refuses_writes_before_they_are_sent() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    cluster.psql(&db.name, "create table keep (n int)");
    for statement in [
        r#"db.execute("insert into keep values (1)")"#,
        r#"db.transaction(|tx| tx.query("select 1"))"#,
        r#"db.migrate("m")"#,
    ] {
        let out = Test::new()
            .env("DB", &db.url)
            .file("glow.toml", "[sql]\nallow_writes = false\n")
            .file("m/001.sql", "insert into keep values (2);")
            .script(&format!("let db = sql::connect(env::get(\"DB\")); print(db.query_one(\"select 1 as one\").one); {statement};"))
            .status(1);
        assert_eq!(out.stdout, "1\n");
        assert!(
            out.stderr.contains("[sql] allow_writes = false"),
            "{statement}: {}",
            out.stderr
        );
    }
    assert_eq!(cluster.psql(&db.name, "select count(*) from keep"), "0\n");
    assert_eq!(
        cluster.psql(&db.name, "select to_regclass('glow_migrations') is null"),
        "t\n"
    );
}

#[test]
fn transaction_commits_on_return_and_rolls_back_on_throw() {
    let db = postgres::database();
    let out = Test::new()
        .env("DB", &db.url)
        .script(
            r#"
            let db = sql::connect(env::get("DB"));
            db.execute("create table t (n int)");
            print(db.transaction(|tx| { tx.execute("insert into t values ($1)", [1]); "done" }));
            try {
                db.transaction(|tx| { tx.execute("insert into t values (2)"); throw "no"; });
            } catch (e) { print("caught " + e); }
            db.transaction(|tx| {
                tx.execute("insert into t values (3)");
                try { tx.transaction(|inner| { inner.execute("insert into t values (4)"); throw "inner"; }); } catch {}
            });
            print(db.query("select n from t order by n").map(|r| r.n));
            "#,
        )
        .status(0);
    assert_eq!(out.stdout, "done\ncaught no\n[1, 3]\n");
}

#[test]
fn password_never_appears_in_output_or_journal() {
    let db = postgres::database();
    for args in [&[][..], &["--format", "json"][..], &["--dry-run"][..]] {
        let (_dir, out) = Test::new()
            .env("DB", &db.url)
            .args(args)
            .script(
                r#"
                let db = sql::connect(env::get("DB"));
                print(db);
                print(env::get("DB"));
                log::info(`connected to ${env::get("DB")}`);
                db.query("select $1::text as url", [env::get("DB")]);
                db.execute("select 1");
                db.query("select nope");
                "#,
            )
            .expect(1);
        let text = all_output(&out);
        assert!(
            !text.contains(PASSWORD),
            "password leaked with {args:?}:\n{text}"
        );
        assert!(text.contains("column \"nope\" does not exist"), "{text}");
        assert!(
            text.contains(&format!(
                "postgres://postgres@127.0.0.1:{}/{}",
                postgres::cluster().port,
                db.name
            )),
            "{text}"
        );
    }
}

#[test]
fn wrong_password_is_an_error_without_the_password() {
    let cluster = postgres::cluster();
    let url = cluster.url_with_password("postgres", "wrong-canary-5521");
    let (_dir, out) = Test::new()
        .env("DB", &url)
        .script(r#"sql::connect(env::get("DB"));"#)
        .expect(1);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        )),
        "{}",
        out.stderr
    );
    assert!(
        !all_output(&out).contains("wrong-canary-5521"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn connection_refused_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let (_dir, out) = Test::new()
        .script(&format!(r#"sql::connect("postgres://app:refused-canary@127.0.0.1:{port}/db", #{{ timeout: "5s" }});"#))
        .expect(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to postgres://app@127.0.0.1:{port}/db"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("connection refused"),
        "{}",
        out.stderr
    );
    assert!(!all_output(&out).contains("refused-canary"));
}

#[test]
fn syntax_error_shows_server_message_and_statement() {
    let db = postgres::database();
    let out = Test::new()
        .env("DB", &db.url)
        .script(r#"let db = sql::connect(env::get("DB")); db.query("select 1 as one,\n  2 frm somewhere");"#)
        .status(1);
    assert!(
        out.stderr
            .contains(r#"syntax error at or near "somewhere" (SQLSTATE 42601)"#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("statement: select 1 as one,   2 frm somewhere\n"),
        "{}",
        out.stderr
    );
    // The caret sits under the position the server reported.
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("statement: select 1"))
        .unwrap();
    let caret = lines[at + 1].find('^').expect("a caret line");
    assert_eq!(&lines[at][caret..caret + 9], "somewhere");
}

#[test]
fn wrong_parameter_count_is_an_error() {
    let db = postgres::database();
    let out = Test::new()
        .env("DB", &db.url)
        .script(r#"let db = sql::connect(env::get("DB")); db.query("select $1::int + $2::int as s", [1]);"#)
        .status(1);
    assert!(
        out.stderr.contains("2 parameters") || out.stderr.contains("requires 2"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("statement: select $1::int + $2::int as s"),
        "{}",
        out.stderr
    );

    let out = Test::new()
        .script(r#"let db = sql::connect("sqlite::memory:"); db.query("select ? as a", [1, 2]);"#)
        .status(1);
    assert!(
        out.stderr
            .contains("the statement has 1 parameter but 2 were given"),
        "{}",
        out.stderr
    );
}

#[test]
fn statement_timeout_stops_pg_sleep() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    let started = Instant::now();
    let out = Test::new()
        .env("DB", &db.url)
        .script(r#"let db = sql::connect(env::get("DB"), #{ timeout: "1s" }); db.query("select pg_sleep(60)");"#)
        .status(1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("timed out after 1s"), "{}", out.stderr);
    assert!(
        out.stderr.contains("statement: select pg_sleep(60)"),
        "{}",
        out.stderr
    );
    assert!(cluster.wait_until_idle("pg_sleep(60)", Duration::from_secs(2)));
}

#[test]
fn step_timeout_cancels_the_query_on_the_server() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    let started = Instant::now();
    let out = Test::new()
        .env("DB", &db.url)
        .script(
            r#"
            let db = sql::connect(env::get("DB"));
            step("slow", #{ timeout: "1s" }, || db.query("select pg_sleep(45)"));
            "#,
        )
        .status(1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("slow"), "{}", out.stderr);
    assert!(
        cluster.wait_until_idle("pg_sleep(45)", Duration::from_secs(3)),
        "the server still runs the statement"
    );
}

#[test]
fn ctrl_c_cancels_the_query_on_the_server() {
    let db = postgres::database();
    let cluster = postgres::cluster();
    let test = Test::new().env("DB", &db.url).script(
        r#"
        let db = sql::connect(env::get("DB"));
        step("slow", || db.query("select pg_sleep(44)"));
        "#,
    );
    let mut command = test.command();
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    eventually("the query running", Duration::from_secs(20), || {
        let active = cluster.psql(
            "postgres",
            "select count(*) from pg_stat_activity where query like '%pg_sleep(44)%' and pid <> pg_backend_pid()",
        );
        (active.trim() == "1").then_some(())
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let interrupted = Instant::now();
    let output = wait_with_timeout(child, Duration::from_secs(20));
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "took {:?}",
        interrupted.elapsed()
    );
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        cluster.wait_until_idle("pg_sleep(44)", Duration::from_secs(3)),
        "the server still runs the statement"
    );
}

#[test]
fn sqlite_statement_timeout_interrupts() {
    let started = Instant::now();
    let out = Test::new()
        .script(
            r#"
            let db = sql::connect("sqlite::memory:", #{ timeout: "1s" });
            db.query("with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c");
            "#,
        )
        .status(1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("timed out after 1s"), "{}", out.stderr);
}

#[test]
fn query_one_needs_exactly_one_row() {
    let out = Test::new()
        .script(r#"let db = sql::connect("sqlite::memory:"); db.query_one("select 1 as a union all select 2");"#)
        .status(1);
    assert!(
        out.stderr.contains("expected exactly one row, got 2"),
        "{}",
        out.stderr
    );
}

#[test]
fn staging_fixtures_apply_after_the_runbook_migrations() {
    let db = postgres::database();
    let staging = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/staging");
    let test = with_migrations(Test::new());
    for entry in std::fs::read_dir(&staging).unwrap().flatten() {
        std::fs::copy(
            entry.path(),
            test.path().join("migrations").join(entry.file_name()),
        )
        .unwrap();
    }
    // The helper functions are the sample workspace's own migration (one copy in the repo).
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/prisma-glow/supabase/migrations/20250821115406_.sql"),
        test.path()
            .join("migrations/20250821115406_helper_functions.sql"),
    )
    .unwrap();
    let out = test
        .env("DB", &db.url)
        .script(
            r#"
            let db = sql::connect(env::get("DB"));
            print(db.migrate("migrations").applied.map(|m| m.name));
            db.execute("insert into openai_debug_events (scope, vector_store_id, citations) values ($1, $2, $3)",
                       ["rag_file_search", "vs_123", [#{ file_id: "f1" }]]);
            let row = db.query_one("select scope, vector_store_id, citations, created_at from openai_debug_events");
            print(`${row.scope} ${row.vector_store_id} ${row.citations[0].file_id} ${time::age(row.created_at).minutes < 5.0}`);
            print(db.query_one("select public.current_org_id() is null as unset").unset);
            "#,
        )
        .status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("[\"20250821115406_helper_functions.sql\", \"20250926090000_"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("20251120090000_openai_debug_events.sql"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "rag_file_search vs_123 f1 true");
    assert_eq!(lines[2], "true");
}
