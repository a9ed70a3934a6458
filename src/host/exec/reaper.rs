//! Children die with the host, even when glow-run is killed with SIGKILL and cannot clean up,
//! so that a resumed run never races a leftover of the run it resumes.
//!
//! Two mechanisms, because each covers what the other cannot:
//! - Every child gets `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills it when glow-run dies.
//!   The signal fires when the *thread* that forked the child ends, not the process: children
//!   are forked on the engine thread (inside `block_on`), which always waits for (or kills)
//!   its child before it returns, so that thread outlives every child it forks.
//! - The death signal reaches the direct child only; what it started lives in its process
//!   group. A reaper process (glow-run itself, re-executed with [`ARG`], in its own process
//!   group so terminal signals miss it) holds the read end of a pipe whose write end only
//!   glow-run holds. Each child writes `+PGID` to the pipe between fork and exec (no window
//!   where a group exists unregistered); when glow-run dies, however it dies, the pipe reads
//!   end-of-file and the reaper SIGKILLs every registered group still alive, then exits. It
//!   forgets groups that are gone (checked every 500 ms, and `-PGID` from glow-run), so a
//!   recycled group id is not hit. A normal exit of glow-run ends leftover groups the same way.
//!
//! Limits: a process that leaves its group (`setsid`, a double-forking daemon, `docker run -d`
//! handing work to dockerd) is not a child of this tree any more and escapes, as it does from
//! every supervisor short of a cgroup.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::process::{ChildStdin, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `argv[1]` that turns glow-run into the reaper (not a subcommand anyone types).
pub const ARG: &str = "__glow-run-reaper";
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The write end of the reaper's pipe, for the life of the process (`None`: it did not start,
/// and children still get the death signal).
static REAPER: OnceLock<Option<Mutex<ChildStdin>>> = OnceLock::new();

fn reaper() -> Option<&'static Mutex<ChildStdin>> {
    REAPER
        .get_or_init(|| {
            let mut command = std::process::Command::new("/proc/self/exe");
            command
                .arg(ARG)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            std::os::unix::process::CommandExt::arg0(&mut command, "glow-run");
            let child = command.spawn().ok()?;
            child.stdin.map(Mutex::new)
        })
        .as_ref()
}

/// Sets up `command` so that its process, and its process group, die with glow-run.
pub fn guard(command: &mut tokio::process::Command) {
    let fd = reaper().map_or(-1, |pipe| {
        pipe.lock().unwrap_or_else(|e| e.into_inner()).as_raw_fd()
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, getpid, signal, write) on a stack buffer: no allocation, no locks.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // glow-run died before the death signal was armed.
                libc::_exit(137);
            }
            if fd >= 0 {
                let mut line = [0_u8; 16];
                let len = format_line(&mut line, b'+', libc::getpid());
                // std has reset SIGPIPE to its default by now: a reaper that died must not
                // kill the child through its closed pipe.
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                libc::write(fd, line.as_ptr().cast(), len);
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// `+1234\n` into `buffer` without allocating; returns its length.
fn format_line(buffer: &mut [u8; 16], sign: u8, pid: libc::pid_t) -> usize {
    let mut digits = [0_u8; 12];
    let mut n = u32::try_from(pid).unwrap_or(0);
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buffer[0] = sign;
    for i in 0..count {
        buffer[1 + i] = digits[count - 1 - i];
    }
    buffer[1 + count] = b'\n';
    count + 2
}

/// Tells the reaper a group is over (when it is: a group with members left stays watched).
pub fn forget(pgid: Pid) {
    if killpg(pgid, None).is_ok() {
        return;
    }
    if let Some(pipe) = reaper() {
        let mut line = [0_u8; 16];
        let len = format_line(&mut line, b'-', pgid.as_raw());
        let _ = pipe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&line[..len]);
    }
}

/// SIGTERM to the whole group, then SIGKILL to whatever is still there after the grace period.
pub async fn terminate_group(pgid: Pid, child: &mut tokio::process::Child, grace: Duration) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        let _ = child.try_wait();
        if killpg(pgid, None).is_err() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The reaper's life: watch groups until glow-run's end of the pipe closes, then kill them.
pub fn serve() -> i32 {
    use nix::sys::signal::{SigHandler, signal};
    for ignored in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: installs the "ignore" disposition; no handler code runs.
        let _ = unsafe { signal(ignored, SigHandler::SigIgn) };
    }
    let groups: Arc<Mutex<HashSet<i32>>> = Arc::default();
    let swept = groups.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(SWEEP_EVERY);
            swept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|g| killpg(Pid::from_raw(*g), None).is_ok());
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pgid) = number.parse::<i32>() else {
            continue;
        };
        let mut groups = groups.lock().unwrap_or_else(|e| e.into_inner());
        match sign {
            "+" if pgid > 1 => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    0
}
