//! `log::info`, `log::warn`, `log::error`: host output on stderr, journaled, redacted.
//! `print` (Rhai's own) writes the script's output to stdout; it is wired in engine.rs.

use super::{HostContext, add_fn, install};
use rhai::{Dynamic, Engine, Module};
use std::rc::Rc;

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    for level in ["info", "warn", "error"] {
        let c = ctx.clone();
        add_fn(
            &mut module,
            level,
            &["message: Dynamic", "()"],
            &format!("Writes a {level} line to stderr and the journal (secrets redacted)."),
            move |message: Dynamic| c.log(level, &message.to_string()),
        );
    }
    install(engine, "log", module);
}
