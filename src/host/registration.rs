//! How host functions are registered: documented (for `glow-run defs`), volatile, and with the
//! call site put on their errors.

use crate::options::HostResult;
use rhai::{Dynamic, Engine};

/// Builds a Rhai map from pairs.
pub fn map_of<const N: usize>(pairs: [(&str, Dynamic); N]) -> rhai::Map {
    pairs
        .into_iter()
        .map(|(key, value)| (key.into(), value))
        .collect()
}

/// Whether namespace functions carry their doc comments (set by `glow-run defs`).
pub static WITH_DOCS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Adds a documented function to a namespace module (called as `ns::name(..)`). The doc text
/// becomes `///` comments in `glow-run defs`; `params` names the parameters
/// (`"program: String"`, last the return type).
pub fn add_fn<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    module: &mut rhai::Module,
    name: &str,
    params: &[&str],
    docs: &str,
    func: FUNC,
) where
    R: std::any::Any + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
{
    let registration = rhai::FuncRegistration::new(name).in_internal_namespace();
    add(module, registration, params, docs, func);
}

/// Like [`add_fn`], for a method of a host type (`db.query(..)`, `page.click(..)`): it goes in
/// the global namespace so that method-call syntax finds it.
pub fn add_method<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    module: &mut rhai::Module,
    name: &str,
    params: &[&str],
    docs: &str,
    func: FUNC,
) where
    R: std::any::Any + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
{
    let registration = rhai::FuncRegistration::new(name).in_global_namespace();
    add(module, registration, params, docs, func);
}

fn add<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    module: &mut rhai::Module,
    registration: rhai::FuncRegistration,
    params: &[&str],
    docs: &str,
    func: FUNC,
) where
    R: std::any::Any + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
{
    let mut registration = registration;
    // Parameter names and doc comments only matter to `glow-run defs` (`check` and the
    // diagnostics need the names of functions, not of their parameters); formatting the
    // comments for every run cost 8 % of the start-up, parsing the parameters another 3 %.
    if WITH_DOCS.load(std::sync::atomic::Ordering::Relaxed) {
        registration = registration.with_params_info(params);
        let comments: Vec<String> = docs
            .lines()
            .map(|line| format!("/// {line}").trim_end().to_owned())
            .collect();
        registration = registration.with_comments([comments.join("\n")]);
    }
    // Pure (arguments by value) and volatile (never constant-folded: every call is an effect).
    let function = with_call_position(func.into_rhai_function(true, true));
    module.set_fn_raw_with_options(registration, FUNC::param_types(), function);
}

/// Rhai leaves the error of a namespaced call (`exec::run(..)`) without a position, so a failed
/// primitive would print no `file:line:col`. The wrapper asks for the call context and puts the
/// call site on an error that has no position yet.
fn with_call_position(function: rhai::RhaiFunc) -> rhai::RhaiFunc {
    /// Rhai's `FnAny` (not exported by name).
    type NativeFn =
        dyn Fn(Option<rhai::NativeCallContext>, &mut [&mut Dynamic]) -> HostResult<Dynamic>;
    let wrap = |inner: rhai::Shared<NativeFn>| -> rhai::Shared<NativeFn> {
        rhai::Shared::new(
            move |context: Option<rhai::NativeCallContext>, args: &mut [&mut Dynamic]| {
                let position = context.as_ref().map(rhai::NativeCallContext::call_position);
                inner(context, args).map_err(|mut error| {
                    if let Some(position) = position.filter(|_| error.position().is_none()) {
                        error.set_position(position);
                    }
                    error
                })
            },
        )
    };
    match function {
        rhai::RhaiFunc::Pure {
            func,
            is_pure,
            is_volatile,
            ..
        } => rhai::RhaiFunc::Pure {
            func: wrap(func),
            has_context: true,
            is_pure,
            is_volatile,
        },
        rhai::RhaiFunc::Method {
            func,
            is_pure,
            is_volatile,
            ..
        } => rhai::RhaiFunc::Method {
            func: wrap(func),
            has_context: true,
            is_pure,
            is_volatile,
        },
        other => other,
    }
}

/// Registers a finished namespace module under its name (`exec`, `http`, ...).
pub fn install(engine: &mut Engine, name: &str, module: rhai::Module) {
    engine.register_static_module(name, module.into());
}
