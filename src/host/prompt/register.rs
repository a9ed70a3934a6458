//! The `prompt` namespace's functions and their documentation.

use super::{approve, confirm, input, secret, select};
use crate::host::{HostContext, add_fn, install, map_of};
use rhai::{Array, Dynamic, Engine, Map, Module};
use std::rc::Rc;

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let mut module = Module::new();

    let docs = "Asks a yes/no question; returns true or false.\n\
                Options: `id` (for non-interactive answers; default: the question slugged), `default_value` (bool; `default` is a reserved word in Rhai).\n\
                Answered by --answers FILE, GLOW_ANSWER_<ID>, --yes, or a person at the terminal.";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "confirm",
        &["question: String", "bool"],
        docs,
        move |question: &str| confirm(&c, question, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "confirm",
        &["question: String", "options: Map", "bool"],
        docs,
        move |question: &str, options: Map| confirm(&c, question, options),
    );

    let docs = "Asks for a line of text; returns it.\n\
                Options: `id`, `default_value` (string), `pattern` (a regex the whole answer must match).";
    let c = ctx.clone();
    add_fn(
        &mut module,
        "input",
        &["question: String", "String"],
        docs,
        move |question: &str| input(&c, question, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "input",
        &["question: String", "options: Map", "String"],
        docs,
        move |question: &str, options: Map| input(&c, question, options),
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "input",
        &["question: String", "default: String", "String"],
        docs,
        move |question: &str, default: &str| {
            input(
                &c,
                question,
                map_of([("default_value", Dynamic::from(default.to_owned()))]),
            )
        },
    );

    register_select_and_secret(&mut module, ctx);
    register_approve(&mut module, ctx);
    install(engine, "prompt", module);
}

/// `prompt::select` and `prompt::secret`.
fn register_select_and_secret(module: &mut Module, ctx: &Rc<HostContext>) {
    let docs = "Asks to choose one of `options` (arrow keys at a terminal); returns the chosen option.\n\
                A non-interactive answer is the option's text or its 0-based index.\n\
                Options: `id`, `default_value` (an option's text or index; else the first).";
    let c = ctx.clone();
    add_fn(
        module,
        "select",
        &["question: String", "options: Array", "String"],
        docs,
        move |question: &str, choices: Array| select(&c, question, choices, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
        "select",
        &["question: String", "options: Array", "opts: Map", "String"],
        docs,
        move |question: &str, choices: Array, options: Map| select(&c, question, choices, options),
    );

    let docs = "Asks for a secret without echoing it; the answer is registered for redaction and\n\
                journaled as [redacted]. Options: `id`.";
    let c = ctx.clone();
    add_fn(
        module,
        "secret",
        &["question: String", "String"],
        docs,
        move |question: &str| secret(&c, question, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
        "secret",
        &["question: String", "options: Map", "String"],
        docs,
        move |question: &str, options: Map| secret(&c, question, options),
    );
}

/// `prompt::approve`.
fn register_approve(module: &mut Module, ctx: &Rc<HostContext>) {
    let docs = "Asks for a sign-off by `role` (id `approve_<role>`); returns\n\
                `#{ id, role, approver, time, script_sha256, plan_hash, planned }` and journals an `approval` event.\n\
                In a live run bound to a saved plan (--plan) it is satisfied by an SSH signature over the plan's hash\n\
                (see `glow-run approve`), waiting up to `wait` for one with --state. Otherwise a typed answer: an e-mail\n\
                or a principal listed in [approvals] roles, or true (GLOW_APPROVER, else git user.email, else the OS user);\n\
                no/decline/reject/cancel/abort/nope decline (an error). --yes never approves; --env-file never answers.\n\
                Policy `[approvals] distinct_from_initiator = true` refuses the identity that started the run.\n\
                Options: `id`, `question`, `wait` (e.g. \"30m\").";
    let c = ctx.clone();
    add_fn(
        module,
        "approve",
        &["role: String", "Map"],
        docs,
        move |role: &str| approve::approve(&c, role, Map::new()),
    );
    let c = ctx.clone();
    add_fn(
        module,
        "approve",
        &["role: String", "options: Map", "Map"],
        docs,
        move |role: &str, options: Map| approve::approve(&c, role, options),
    );
}
