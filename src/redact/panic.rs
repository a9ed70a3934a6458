//! The panic hook. Rust's default hook prints the panic message (which may quote a value that
//! holds a secret) and, with `RUST_BACKTRACE`, a backtrace, straight to stderr. glow-run's hook
//! renders the same through the redactor of every secret registered in the process, so even
//! a crash never shows one.

use super::everything;

pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        let text = report(&thread, location.as_deref(), &message, backtrace.as_deref());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    }));
}

/// What the hook prints, redacted.
fn report(thread: &str, location: Option<&str>, message: &str, backtrace: Option<&str>) -> String {
    let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
    let mut text = format!("internal error: thread '{thread}' panicked{at}: {message}\n");
    if let Some(backtrace) = backtrace {
        text.push_str(backtrace);
        text.push('\n');
    }
    everything().redact(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_report_is_redacted_with_every_registered_secret() {
        // Registered through an ordinary redactor: the hook sees it through the process-wide one.
        crate::redact::Redactor::new().register("panic-canary-31337");
        let text = report(
            "glow-engine",
            Some("src/x.rs:1"),
            "called unwrap on panic-canary-31337",
            Some("frame: value=panic-canary-31337"),
        );
        assert!(!text.contains("panic-canary-31337"), "{text}");
        assert!(
            text.contains("panicked at src/x.rs:1: called unwrap on [redacted]"),
            "{text}"
        );
    }
}
