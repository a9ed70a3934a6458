//! Asking a person: dialoguer on the controlling terminal (`/dev/tty`), so prompts work when
//! stdout and stderr are piped, and fail at once (never hang) when there is no terminal.
//!
//! The prompt runs on its own thread while the engine thread waits on it raced against the
//! run's cancellation (Ctrl-C, SIGTERM, a step timeout). Whatever ends the wait, the terminal is
//! put back as it was before the prompt (termios restored: echo on, canonical mode; cursor
//! shown), because a cancelled prompt's thread never gets to restore it itself. Ctrl-C typed
//! while the terminal is in raw mode arrives as a key, not a signal: console raises SIGINT and
//! returns `Interrupted`, which cancels the run like any Ctrl-C (exit 130).
//!
//! Known limit: a prompt cancelled by something other than Ctrl-C typed into it (a step timeout,
//! a reload) leaves its thread blocked reading the terminal until the process exits; a later
//! prompt in the same process (a rollback's, the next watch run's) may lose a first keystroke
//! to it.

use crate::cancel::CancelReason;
use crate::host::HostContext;
use crate::options::{HostResult, host_error};
use console::Term;
use nix::sys::termios::{SetArg, Termios, tcgetattr, tcsetattr};
use std::fs::File;
use std::io::Write;

/// The controlling terminal, when the process has one.
pub struct Tty {
    file: File,
}

impl Tty {
    /// Opens `/dev/tty`; `None` without a controlling terminal (CI, `setsid`, a daemon).
    pub fn open() -> Option<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        nix::unistd::isatty(&file).ok().filter(|&is| is)?;
        Some(Self { file })
    }

    /// A yes/no question on the terminal outside any run (watch mode's live confirmation): it
    /// blocks until answered; the terminal is restored whatever the answer.
    pub fn confirm(self, question: &str) -> dialoguer::Result<bool> {
        let saved = tcgetattr(&self.file).ok();
        let term = Term::read_write_pair(self.file.try_clone()?, self.file.try_clone()?);
        let answer = dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact_on(&term);
        if answer.is_err() {
            restore(&self.file, saved.as_ref());
        }
        answer
    }

    /// Runs `ask` on the terminal (on its own thread) and waits for the answer or cancellation.
    pub fn ask<T: Send + 'static>(
        self,
        ctx: &HostContext,
        id: &str,
        ask: impl FnOnce(&Term) -> dialoguer::Result<T> + Send + 'static,
    ) -> HostResult<T> {
        let saved = tcgetattr(&self.file).ok();
        let (reader, writer) = match (self.file.try_clone(), self.file.try_clone()) {
            (Ok(reader), Ok(writer)) => (reader, writer),
            (Err(e), _) | (_, Err(e)) => {
                return Err(host_error(format!(
                    "prompt '{id}': cannot use the terminal: {e}"
                )));
            }
        };
        let term = Term::read_write_pair(reader, writer);
        // Lines from running work wait until the prompt is answered.
        let held = crate::reporter::hold_output();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("glow-prompt".into())
            .spawn(move || {
                let _ = sender.send(ask(&term));
            });
        if let Err(e) = spawned {
            return Err(host_error(format!(
                "prompt '{id}': cannot start the prompt: {e}"
            )));
        }
        let outcome = ctx.block_on(receiver);
        let result = match outcome {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(dialoguer::Error::IO(error))))
                if error.kind() == std::io::ErrorKind::Interrupted =>
            {
                ctx.cancel.cancel_run(CancelReason::Interrupted);
                Err(ctx.cancelled_error())
            }
            Ok(Ok(Err(dialoguer::Error::IO(error))))
                if error.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Err(host_error(format!(
                    "prompt '{id}': the terminal was closed before it was answered"
                )))
            }
            Ok(Ok(Err(error))) => Err(host_error(format!(
                "prompt '{id}': terminal error: {error}"
            ))),
            Ok(Err(_)) => Err(host_error(format!("prompt '{id}': the prompt failed"))),
            Err(cancelled) => Err(cancelled),
        };
        restore(&self.file, saved.as_ref());
        drop(held);
        result
    }
}

/// Puts the terminal back: saved termios (echo, canonical mode, signals), cursor shown, and a
/// fresh line so what follows does not land on the prompt's line.
fn restore(file: &File, saved: Option<&Termios>) {
    if let Some(saved) = saved {
        let _ = tcsetattr(file, SetArg::TCSANOW, saved);
    }
    let mut file = file;
    let _ = file.write_all(b"\x1b[?25h\r\n");
    let _ = file.flush();
}
