//! Builds the Rhai engine for a run: every limit set explicitly, `eval` disabled, strict
//! variables, the module resolver, `print`/`debug` routed through the journal, the progress
//! callback that enforces the memory cap and cancellation, and every host namespace.

mod checked;

use crate::alloc;
use crate::cancel::CancelReason;
use crate::host::{self, HostContext};
use crate::policy::Limits;
use crate::resolver::{Resolver, SharedSources};
use rhai::{Dynamic, Engine};
use std::rc::Rc;
use std::sync::Arc;

/// Thrown through `ErrorTerminated` when the memory cap is exceeded.
pub const MEMORY_TOKEN: &str = "glow:memory";

/// An engine with limits and safety settings but no host namespaces (for `check` and `defs`).
pub fn bare(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.call_levels)
        .set_max_expr_depths(limits.expression_depth, limits.expression_depth)
        .set_max_variables(limits.variables)
        .set_max_modules(limits.modules)
        // Rhai's data-size limits are set to 0 (off) on purpose, the string limit included: when
        // any of them is on, Rhai re-measures every array, map and string it touches after each
        // change (`calc_data_sizes`), which makes a loop that pushes to an array quadratic
        // (100 000 pushes took 13 s here, 200 000 took 50 s). The memory cap, checked by the
        // progress callback against the counting allocator, bounds all three instead.
        .set_max_string_size(0)
        .set_max_array_size(0)
        .set_max_map_size(0)
        .set_strict_variables(true)
        .disable_symbol("eval");
    engine
}

/// The engine of a run, wired to its host context.
pub fn build(ctx: &Rc<HostContext>, sources: SharedSources) -> Engine {
    let limits = &ctx.policy.limits;
    let mut engine = bare(limits);
    engine.set_module_resolver(Resolver::new(
        ctx.settings.script_dir.clone(),
        ctx.settings.flags.stdlib.clone(),
        sources,
    ));

    let cancel = Arc::clone(&ctx.cancel);
    let memory_cap = usize::try_from(limits.memory).unwrap_or(usize::MAX);
    // Checked on every operation (two relaxed atomic loads): checking only every N operations
    // let `s += s` double a string N times between checks, far past the cap.
    engine.on_progress(move |_operations| {
        if alloc::allocated() > memory_cap {
            return Some(Dynamic::from(MEMORY_TOKEN));
        }
        if cancel.is_pending() {
            return Some(Dynamic::from(CancelReason::TOKEN));
        }
        None
    });

    // `"text" + number` and `${number}` call Rhai's generic `to_string`, found through a
    // lookup without caches that walks every registered module, and then look the text up as a
    // custom type name in every module again. With a dozen host namespaces that made a
    // string-building script ~20% slower than plain Rhai (bench P8 strings). This exact
    // overload for integers is found first (the engine's own namespace) and gives the same text.
    engine.register_fn("to_string", |value: rhai::INT| value.to_string());
    checked::register(&mut engine, memory_cap);

    let c = ctx.clone();
    engine.on_print(move |text| {
        c.record(crate::event::Body::Output(crate::event::Output {
            stream: "script".into(),
            line: text.to_owned(),
            ..Default::default()
        }));
    });
    let c = ctx.clone();
    engine.on_debug(move |text, _source, position| {
        c.log("debug", &format!("{text} ({position})"));
    });

    crate::script_error::register(&mut engine);
    host::register(&mut engine, ctx);
    engine
}
