//! Finding and starting the run's one Chromium, and making sure it dies.
//!
//! Why it is spawned here rather than by chromiumoxide's `Browser::launch`: the host must own
//! the process. It starts in its own process group (so the whole tree, zygotes and renderers
//! included, can be killed at once), with `PR_SET_PDEATHSIG` (so it dies even when glow-run is
//! SIGKILLed), in a fresh temporary profile that is removed with it. chromiumoxide then only
//! connects to the DevTools WebSocket the browser prints on stderr.

use chromiumoxide::Browser;
use chromiumoxide::handler::HandlerConfig;
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Names looked up on PATH when `GLOW_BROWSER` is not set, in this order.
pub const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// How long the browser may take to print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the browser's stderr kept for error messages.
const STDERR_TAIL: usize = 20;
/// After SIGKILL, how long to wait for every process of the group to be gone.
const REAP_DEADLINE: Duration = Duration::from_secs(3);

/// Flags for a quiet, headless, throwaway browser: no first-run UI, no background traffic
/// (component updates, sync, safe-browsing lists, QUIC probes) that would reach the network.
const FLAGS: [&str; 14] = [
    "--headless",
    "--remote-debugging-port=0",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--password-store=basic",
    "--window-size=1280,800",
];

/// Where the browser comes from: `GLOW_BROWSER` (a path or a name on PATH), else the first of
/// [`CANDIDATES`] on PATH. The error says what was looked for.
pub fn find(glow_browser: Option<&str>) -> Result<PathBuf, String> {
    if let Some(given) = glow_browser {
        return which::which(given).map_err(|_| {
            format!("GLOW_BROWSER={given} is not an executable file or a program on PATH")
        });
    }
    CANDIDATES
        .iter()
        .find_map(|name| which::which(name).ok())
        .ok_or_else(|| {
            format!(
                "no browser found: GLOW_BROWSER is not set and none of {} is on PATH (install Chromium, e.g. apt-get install chromium)",
                CANDIDATES.join(", ")
            )
        })
}

/// Free space `/dev/shm` needs before the profile goes there.
const SHM_MIN_FREE: u64 = 512 * 1024 * 1024;

/// Where the throwaway profile goes: `TMPDIR` when it is set, else `/dev/shm` (memory: the
/// browser writes a few hundred files that a disk-backed /tmp takes hundreds of milliseconds to
/// delete) when it has room, else the system's temporary folder.
fn profile_parent() -> PathBuf {
    if std::env::var_os("TMPDIR").is_some_and(|dir| !dir.is_empty()) {
        return std::env::temp_dir();
    }
    let shm = Path::new("/dev/shm");
    let roomy = nix::sys::statvfs::statvfs(shm)
        .is_ok_and(|fs| fs.blocks_available() * fs.fragment_size() >= SHM_MIN_FREE);
    let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
    if roomy && writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The browser's process group and profile. Dropping it kills the whole group and then
/// removes the profile, so a start cancelled halfway (Ctrl-C while Chromium boots) leaves
/// nothing behind either.
struct Process {
    child: Child,
    pid: i32,
    profile: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        kill_group(self.pid, &mut self.child);
        // `profile` is removed after this, once nothing writes to it any more.
    }
}

/// A running browser: the CDP connection, its handler task and the process.
pub struct Launched {
    pub browser: Browser,
    pub executable: PathBuf,
    handler: tokio::task::JoinHandle<()>,
    process: Process,
}

/// Starts the browser in its own process group, in a fresh profile, and with `PR_SET_PDEATHSIG`.
fn spawn(executable: &Path) -> Result<(Process, std::process::ChildStderr), String> {
    let parent = profile_parent();
    let profile = tempfile::Builder::new()
        .prefix("glow-browser-")
        .tempdir_in(&parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary browser profile in {}: {e}",
                parent.display()
            )
        })?;
    // Chromium's own temporary files (its singleton socket folder, shared memory) go inside the
    // profile, so they are removed with it even after a SIGKILL.
    let scratch = profile.path().join("tmp");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let mut command = Command::new(executable);
    command
        .env("TMPDIR", &scratch)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    // Chromium's sandbox refuses to run as root; elsewhere it stays on.
    if nix::unistd::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    command.arg("about:blank");
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", executable.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let pid = child.id() as i32;
    Ok((
        Process {
            child,
            pid,
            profile,
        },
        stderr,
    ))
}

/// Starts the browser and connects to it. Call inside the run's runtime (it spawns the CDP
/// handler task there). Dropped before it resolves, it kills what it started.
pub async fn start(executable: &Path) -> Result<Launched, String> {
    let (process, stderr) = spawn(executable)?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let address = watch_stderr(stderr, tail.clone());
    let ws_url = match tokio::time::timeout(START_TIMEOUT, address).await {
        Ok(Ok(url)) => url,
        outcome => {
            drop(process);
            let why = if outcome.is_err() {
                format!("it printed no DevTools address within {START_TIMEOUT:?}")
            } else {
                "it exited before printing its DevTools address".to_owned()
            };
            let lines: Vec<String> = tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            return Err(format!(
                "cannot start {}: {why}\n--- browser stderr (last lines) ---\n{}",
                executable.display(),
                lines.join("\n")
            ));
        }
    };
    let config = HandlerConfig {
        viewport: None,
        request_timeout: Duration::from_secs(60),
        ..HandlerConfig::default()
    };
    let (browser, mut handler) = Browser::connect_with_config(ws_url.clone(), config)
        .await
        .map_err(|e| format!("cannot connect to the browser at {ws_url}: {e}"))?;
    // The handler drives the CDP connection; it ends when the socket closes. Single bad
    // messages are not fatal.
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Ok(Launched {
        browser,
        executable: executable.to_owned(),
        handler,
        process,
    })
}

/// Reads the browser's stderr on a thread: resolves with the DevTools WebSocket address, and
/// keeps draining (a full pipe would stall the browser), remembering the last lines.
fn watch_stderr(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> tokio::sync::oneshot::Receiver<String> {
    let (found, address) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("glow-browser-stderr".into())
        .spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                    continue;
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
        .expect("spawning the stderr reader");
    address
}

impl Launched {
    /// Whether the browser process is still running (it may have crashed since).
    pub fn alive(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    pub fn profile(&self) -> &Path {
        self.process.profile.path()
    }

    /// Ends the browser: the CDP task, then SIGKILL to the whole process group (a throwaway
    /// profile needs no clean shutdown), then waits until no process of the group is left and
    /// removes the profile.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

/// SIGKILL to the group, reap the leader, and wait (bounded) for the rest to be gone.
fn kill_group(pgid: i32, child: &mut Child) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    let _ = child.wait();
    let deadline = Instant::now() + REAP_DEADLINE;
    while group_alive(pgid) && Instant::now() < deadline {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether any process other than a zombie is still in process group `pgid` (from /proc).
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // Fields after the command name: state, ppid, pgrp, ...
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}
