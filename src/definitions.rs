//! `glow-run defs`: Rhai definition files (`.d.rhai`) for editors, so a language server (the
//! Rhai VS Code extension, rhai-lsp) can complete and document `exec::run`, `http::get`, ... and
//! the embedded standard library.
//!
//! The host namespaces come from the engine's own metadata (every function is registered with
//! its parameter names and doc comment through `host::add_fn`), built through a real
//! [`HostContext`] so nothing is left out; the stdlib modules are compiled (not run) and their
//! functions listed with their `///` comments.

use crate::config::{Mode, RunSettings, sha256_hex};
use crate::error::Error;
use crate::policy::Policy;
use crate::redact::Redactor;
use crate::resolver::STDLIB;
use include_dir::Dir;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// One definition file: its file name and its text.
pub struct DefinitionFile {
    pub name: String,
    pub text: String,
}

/// Every definition file: with `builtins`, also Rhai's own functions and operators (what an
/// editor needs when it knows nothing about Rhai); the host namespaces, one file each, the global
/// functions (`step`, `check`, ...) in `__static__.d.rhai`, and one file per stdlib module.
pub fn generate(builtins: bool) -> Result<Vec<DefinitionFile>, Error> {
    crate::host::WITH_DOCS.store(true, std::sync::atomic::Ordering::Relaxed);
    let runtime = crate::session::inspection_runtime()?;
    let crate::session::Session { engine, .. } = crate::session::build(
        Arc::new(settings()?),
        Arc::new(Redactor::new()),
        Arc::new(crate::cancel::Cancel::new()),
        runtime.handle().clone(),
        "defs",
    );
    let mut files: Vec<DefinitionFile> = engine
        .definitions()
        .include_standard_packages(builtins)
        .iter_files()
        .map(|(name, text)| {
            let text = if name.starts_with("__builtin") {
                text
            } else {
                rename_reserved_params(&text)
            };
            DefinitionFile { name, text }
        })
        .collect();
    for (module, doc, functions) in stdlib_modules(&engine)? {
        files.push(DefinitionFile {
            name: format!("{}.d.rhai", module.replace('/', "-")),
            text: format!("{doc}module \"{module}\";\n\n{functions}"),
        });
    }
    Ok(files)
}

/// Everything as one text (for stdout): globals, then `module name { ... }` blocks.
pub fn single_file() -> Result<String, Error> {
    let mut out = String::from("module static;\n\n");
    for file in generate(false)? {
        let body = strip_header(&file.text);
        if file.name == "__static__.d.rhai" {
            out.push_str(body.trim_end());
            out.push('\n');
        } else {
            let module = header_name(&file.text)
                .unwrap_or_else(|| file.name.trim_end_matches(".d.rhai").to_owned());
            let _ = write!(out, "\nmodule {module} {{\n{}\n}}\n", body.trim_end());
        }
    }
    Ok(out)
}

/// A host function's parameter may be named like a Rhai reserved word (`default`), which an
/// editor's parser rejects: such a name becomes `default_value`. The real parser decides.
fn rename_reserved_params(text: &str) -> String {
    let parser = rhai::Engine::new_raw();
    let usable = |name: &str| parser.compile(format!("fn f({name}) {{}}")).is_ok();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        // Indexers of host types (`index$get$`) are not callable by name and do not parse as
        // Rhai; editors learn about `value[key]` from the type, so they are left out.
        if line
            .strip_prefix("fn ")
            .is_some_and(|rest| rest.split('(').next().unwrap_or("").contains('$'))
        {
            continue;
        }
        let fixed = line.strip_prefix("fn ").and_then(|rest| {
            let (name, rest) = rest.split_once('(')?;
            let (params, ret) = rest.rsplit_once(") ->")?;
            let params: Vec<String> = params
                .split(", ")
                .map(|param| match param.split_once(": ") {
                    Some((name, ty)) if !name.is_empty() && !usable(name) => {
                        format!("{name}_value: {ty}")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            Some(format!("fn {name}({}) ->{ret}", params.join(", ")))
        });
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The name in the `module ...;` line of a definition file.
fn header_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.strip_prefix("module ")?
            .strip_suffix(';')
            .map(str::to_owned)
    })
}

/// The text without its `module ...;` line.
fn strip_header(text: &str) -> String {
    text.lines()
        .filter(|line| !(line.starts_with("module ") && line.ends_with(';')))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_start_matches('\n')
        .to_owned()
}

/// Settings for an engine that is only inspected, never run.
fn settings() -> Result<RunSettings, Error> {
    Ok(RunSettings {
        source_name: "<defs>".into(),
        script_path: None,
        script_dir: std::env::current_dir().map_err(|e| Error::host("current directory", e))?,
        text: String::new(),
        sha256: sha256_hex(b""),
        vars: Default::default(),
        env_overlay: Default::default(),
        mode: Mode::DryRun,
        flags: Default::default(),
        policy: Arc::new(Policy::default()),
        state_dir: PathBuf::from(".glow"),
        state_url: None,
        resume: None,
        answers: Default::default(),
    })
}

/// (import path, `//!` module doc, function definitions) of every embedded stdlib module.
/// `engine` must know the host namespaces (strict variables reject `exec::` otherwise).
pub fn stdlib_modules(engine: &rhai::Engine) -> Result<Vec<(String, String, String)>, Error> {
    let mut found = Vec::new();
    collect(&STDLIB, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut modules = Vec::new();
    for (path, text) in found {
        let ast = engine
            .compile(&text)
            .map_err(|e| Error::host(format!("compiling the embedded stdlib module {path}"), e))?;
        let mut doc = String::new();
        for line in ast.doc().lines() {
            let _ = writeln!(doc, "{line}");
        }
        let mut out = String::new();
        let mut functions: Vec<_> = ast
            .iter_functions()
            .filter(|f| f.access != rhai::FnAccess::Private && !f.name.starts_with("anon$"))
            .collect();
        functions.sort_by(|a, b| a.name.cmp(b.name).then(a.params.len().cmp(&b.params.len())));
        for function in functions {
            for comment in &function.comments {
                let _ = writeln!(out, "{comment}");
            }
            let params: Vec<String> = function.params.iter().map(|p| format!("{p}: ?")).collect();
            let _ = writeln!(out, "fn {}({}) -> ?;\n", function.name, params.join(", "));
        }
        modules.push((
            path.trim_end_matches(".rhai").to_owned(),
            doc,
            out.trim_end().to_owned() + "\n",
        ));
    }
    Ok(modules)
}

fn collect(dir: &Dir<'static>, found: &mut Vec<(String, String)>) {
    for file in dir.files() {
        let path = file.path().to_string_lossy().replace('\\', "/");
        if path.ends_with(".rhai") {
            found.push((path, file.contents_utf8().unwrap_or_default().to_owned()));
        }
    }
    for sub in dir.dirs() {
        collect(sub, found);
    }
}
