//! Who is running glow-run and who approves: `GLOW_APPROVER` / `GLOW_INITIATOR`, else git's
//! `user.email`, else the operating-system user. Computed on demand (it may spawn git).

use std::process::{Command, Stdio};

/// git's `user.email`, if git is installed and it is set.
pub fn git_email() -> Option<String> {
    let output = Command::new("git")
        .args(["config", "user.email"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let email = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !email.is_empty()).then_some(email)
}

pub fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The identity that started the run.
pub fn initiator() -> String {
    from_env("GLOW_INITIATOR").or_else(git_email).unwrap_or_else(os_user)
}

/// The identity an approval answered with `true` stands for.
pub fn approver() -> String {
    from_env("GLOW_APPROVER").or_else(git_email).unwrap_or_else(os_user)
}
