//! Cancellation of a run: Ctrl-C, a step's timeout, a hot reload, the memory cap.
//!
//! Two consumers need to notice it: the engine's progress callback (a cheap atomic read every
//! few hundred operations) and host functions blocked on I/O (they race their future against a
//! [`CancellationToken`]). Each step gets a child token so its timeout cancels only its own work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
pub use tokio_util::sync::CancellationToken;

/// Why the script is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// Ctrl-C / SIGINT / SIGTERM.
    Interrupted,
    /// A step ran past its timeout; `depth` is its place on the step stack.
    StepTimeout {
        step: String,
        depth: usize,
        after: Duration,
    },
    /// Watch mode saw a change and starts the run again.
    Reload,
}

impl CancelReason {
    /// The value thrown through Rhai as `ErrorTerminated`, so scripts cannot catch it.
    pub const TOKEN: &'static str = "glow:cancelled";
}

#[derive(Debug)]
pub struct Cancel {
    pending: AtomicBool,
    reason: Mutex<Option<CancelReason>>,
    pub root: CancellationToken,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self {
            pending: AtomicBool::new(false),
            reason: Mutex::new(None),
            root: CancellationToken::new(),
        }
    }

    /// Cancels the whole run.
    pub fn cancel_run(&self, reason: CancelReason) {
        self.set_reason(reason);
        self.root.cancel();
    }

    /// Records a reason (the first one wins; an interrupt overrides a timeout).
    pub fn set_reason(&self, reason: CancelReason) {
        let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        let replace = matches!(
            (&*current, &reason),
            (None, _)
                | (
                    Some(CancelReason::StepTimeout { .. }),
                    CancelReason::Interrupted | CancelReason::Reload
                )
        );
        if replace {
            *current = Some(reason);
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Cheap check for the progress callback.
    #[inline]
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<CancelReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A step that handled its own timeout clears it so the run can go on.
    pub fn clear_step_timeout(&self, depth: usize) -> Option<CancelReason> {
        let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some(CancelReason::StepTimeout { depth: d, .. }) if *d == depth => {
                let reason = current.take();
                self.pending.store(false, Ordering::Release);
                reason
            }
            _ => None,
        }
    }
}
