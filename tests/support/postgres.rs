//! A throwaway PostgreSQL cluster for the test binary: one per process, started on first use.
//!
//! `initdb` into a temp dir, a free port on 127.0.0.1 with password (SCRAM) authentication
//! over TCP so a wrong password fails as it would in production, trust on the unix socket
//! (in the temp dir) for the harness's own `psql` calls. PostgreSQL refuses to run as root, so
//! when the tests run as root the cluster runs as the unprivileged `postgres` user (`setpriv`)
//! and the temp dir is handed to it.
//!
//! Teardown: an `atexit` hook stops the cluster when the test binary exits, and a watchdog
//! shell (its own session, so it survives us) stops it if the test binary is killed instead.
//!
//! A missing PostgreSQL is a test failure with a message saying what to install, never a skip.
//!
//! `database()` gives every test a fresh database (`CREATE DATABASE test_N`), so tests are
//! independent and can run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The superuser's password: distinctive so tests can assert it never appears in any output.
pub const PASSWORD: &str = "pw-canary-7f3a9c1e";
pub const USER: &str = "postgres";

pub struct Cluster {
    pub bin: PathBuf,
    /// The temp dir holding `data/`, the socket and the log.
    pub root: PathBuf,
    pub port: u16,
}

/// A fresh database in the shared cluster.
pub struct Database {
    pub name: String,
    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/NAME`
    pub url: String,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(1);

/// The cluster, started on first use. Panics (fails the test) when PostgreSQL is missing or
/// does not start.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => panic!("test PostgreSQL: {why}"),
    }
}

/// A new, empty database for one test.
pub fn database() -> Database {
    cluster().create_database()
}

/// Finds the server binaries: `initdb` on PATH, else Debian's newest /usr/lib/postgresql/*/bin.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(path) = which_initdb() {
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        return Ok(real.parent().unwrap().to_owned());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|dir| dir.join("initdb").exists());
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().ok_or_else(|| {
        "PostgreSQL server binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin). \
         Install them (Debian/Ubuntu: apt-get install postgresql; .ci/run does this) and run the tests again."
            .to_owned()
    })
}

fn which_initdb() -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .ok_or(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command for a server binary, run as `postgres` when we are root.
fn server_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        command.arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut command: Command, what: &str) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({})\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Result<Cluster, String> {
    let bin = find_bin()?;
    // Kept (not deleted on drop): the teardown removes it after the server has stopped.
    let root = tempfile::Builder::new()
        .prefix("glow-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = root.join("data");
    let pwfile = root.join("pwfile");
    std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
    if is_root() {
        let ids = run(
            {
                let mut c = Command::new("id");
                c.args(["-u", "postgres"]);
                c
            },
            "id -u postgres",
        )
        .map_err(|_| "the `postgres` system user does not exist (useradd --system postgres; .ci/run does this)".to_owned())?;
        let uid: u32 = ids.trim().parse().map_err(|_| format!("odd uid {ids}"))?;
        let gid = run(
            {
                let mut c = Command::new("id");
                c.args(["-g", "postgres"]);
                c
            },
            "id -g postgres",
        )?;
        let gid: u32 = gid.trim().parse().map_err(|_| format!("odd gid {gid}"))?;
        for path in [&root, &pwfile] {
            nix::unistd::chown(path.as_path(), Some(uid.into()), Some(gid.into()))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
    }
    let mut initdb = server_command(&bin, "initdb");
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            USER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    run(initdb, "initdb")?;

    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut pg_ctl = server_command(&bin, "pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("server.log"))
            .args(["-w", "-t", "60", "start", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                root.display()
            ));
        match run(pg_ctl, "pg_ctl start") {
            Ok(_) => {
                let cluster = Cluster { bin, root, port };
                cluster.arrange_teardown();
                return Ok(cluster);
            }
            Err(why) => {
                let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
                last_error = format!("{why}\n{log}");
            }
        }
    }
    Err(format!("the server did not start: {last_error}"))
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(cluster)) = CLUSTER.get() {
        cluster.stop();
    }
}

impl Cluster {
    fn stop_command(&self) -> Command {
        let mut command = server_command(&self.bin, "pg_ctl");
        command
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn stop(&self) {
        let _ = self.stop_command().status();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    fn arrange_teardown(&self) {
        // SAFETY: registering a plain function with the C runtime; it runs once at exit.
        unsafe {
            atexit(stop_at_exit);
        }
        // The watchdog: if this process dies without running atexit handlers (SIGKILL), stop the
        // cluster anyway once our pid is gone.
        let stop: Vec<String> = {
            let command = self.stop_command();
            std::iter::once(command.get_program().to_string_lossy().into_owned())
                .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
                .collect()
        };
        let quoted: Vec<String> = stop
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            stop = quoted.join(" "),
            root = self.root.display()
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/NAME`
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    pub fn url_with_password(&self, database: &str, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    pub fn create_database(&self) -> Database {
        let name = format!("test_{}", NEXT_DATABASE.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("create database {name}"));
        Database {
            url: self.url(&name),
            name,
        }
    }

    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(USER)
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env("PGCONNECT_TIMEOUT", "10");
        command
    }

    /// Runs SQL through psql on the unix socket and returns the unaligned, tuples-only output.
    /// Panics on any error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut command = self.client("psql");
        command.args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-A",
            "-t",
            "-q",
            "-d",
            database,
            "-c",
            sql,
        ]);
        run(command, &format!("psql -c {sql:?}")).unwrap_or_else(|why| panic!("{why}"))
    }

    /// A schema-and-data dump of a database, for before/after comparisons.
    pub fn dump(&self, database: &str) -> String {
        let mut command = self.client("pg_dump");
        command.args(["--no-owner", "-d", database]);
        let text = run(command, "pg_dump").unwrap_or_else(|why| panic!("{why}"));
        // Recent pg_dump versions wrap the dump in \restrict KEY / \unrestrict KEY with a
        // random key: drop those lines so two dumps of the same database compare equal.
        text.lines()
            .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until no backend runs a statement matching `pattern` (for cancellation checks);
    /// returns false when one is still there after `limit`.
    pub fn wait_until_idle(&self, pattern: &str, limit: Duration) -> bool {
        let sql = format!(
            "select count(*) from pg_stat_activity where state = 'active' and query like '%{pattern}%' and pid <> pg_backend_pid()"
        );
        super::poll(limit, || {
            (self.psql("postgres", &sql).trim() == "0").then_some(())
        })
        .is_some()
    }
}
