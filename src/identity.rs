//! Who is running glow-run and who approves: `GLOW_APPROVER` / `GLOW_INITIATOR`, else git's
//! `user.email`, else the operating-system user. Computed on demand (it may spawn git).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `git config user.email` may take before it is killed and ignored.
const GIT_TIMEOUT: Duration = Duration::from_secs(5);

/// git's `user.email`, if git is installed and it is set (within [`GIT_TIMEOUT`]).
pub fn git_email() -> Option<String> {
    let mut child = Command::new("git")
        .args(["config", "user.email"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + GIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let mut email = String::new();
    child.stdout.take()?.read_to_string(&mut email).ok()?;
    let email = email.trim().to_owned();
    (status.success() && !email.is_empty()).then_some(email)
}

pub fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn from_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The identity that started the run.
pub fn initiator() -> String {
    from_env("GLOW_INITIATOR")
        .or_else(git_email)
        .unwrap_or_else(os_user)
}

/// The identity an approval answered with `true` stands for.
pub fn approver() -> String {
    from_env("GLOW_APPROVER")
        .or_else(git_email)
        .unwrap_or_else(os_user)
}
