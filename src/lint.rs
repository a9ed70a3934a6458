//! `glow-run check`: compile scripts (imports included) without running them, and lint what the
//! compiler cannot see: calls to functions a host namespace does not have, and duplicate step
//! names (resume and `--from` match steps by name).

use crate::config::{Mode, RunSettings};
use crate::error::{EXIT_OK, Error};
use crate::host::HostContext;
use crate::redact::Redactor;
use crate::resolver::{SharedSources, Sources};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// The host namespaces and their function names, read from an engine's metadata.
pub fn namespace_functions(engine: &rhai::Engine) -> BTreeMap<String, BTreeSet<String>> {
    let mut namespaces: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for signature in engine.gen_fn_signatures(false) {
        let Some((path, _)) = signature.split_once('(') else { continue };
        let path = path.trim_start_matches("fn ").trim();
        if let Some((namespace, name)) = path.rsplit_once("::") {
            namespaces.entry(namespace.to_owned()).or_default().insert(name.to_owned());
        }
    }
    namespaces
}

pub fn check(scripts: &[PathBuf], stdlib: Option<PathBuf>) -> Result<i32, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the runtime", e))?;
    let mut findings = Vec::new();
    for script in scripts {
        let flags = crate::arguments::RunFlags { dry_run: true, stdlib: stdlib.clone(), ..Default::default() };
        let mut settings = match RunSettings::load(Some(script), None, flags, &Default::default()) {
            Ok(settings) => settings,
            Err(error) => {
                findings.push(error.render());
                continue;
            }
        };
        settings.mode = Mode::DryRun;
        let settings = Arc::new(settings);
        let ctx = HostContext::new(
            settings.clone(),
            Arc::new(Redactor::new()),
            Arc::new(crate::cancel::Cancel::new()),
            runtime.handle().clone(),
            "check",
        );
        let sources: SharedSources = Rc::new(RefCell::new(Sources::default()));
        sources.borrow_mut().texts.insert(settings.source_name.clone(), settings.text.clone());
        let engine = crate::engine::build(&ctx, sources.clone());
        if let Err(error) = engine.compile_into_self_contained(&rhai::Scope::new(), &settings.text) {
            findings.push(crate::run::compile_error(&error, &settings.source_name, &sources).render());
            continue;
        }
        let namespaces = namespace_functions(&engine);
        findings.extend(lint_source(&settings.source_name, &settings.text, &namespaces));
    }
    if findings.is_empty() {
        eprintln!("check: {} script(s) ok", scripts.len());
        Ok(EXIT_OK)
    } else {
        Err(Error::Lint { findings })
    }
}

/// A token of Rhai source, enough for the lints: identifiers, strings, punctuation.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Ident(String),
    Str(String),
    Punct(String),
}

#[derive(Debug, Clone)]
pub struct Spanned {
    pub token: Token,
    pub line: usize,
    pub column: usize,
}

/// Splits source into tokens, skipping comments and whitespace.
pub fn tokenize(text: &str) -> Vec<Spanned> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, column: &mut usize, c: char| {
        *i += 1;
        if c == '\n' {
            *line += 1;
            *column = 1;
        } else {
            *column += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_column) = (line, column);
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut column, c);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                { let ch = chars[i]; advance(&mut i, &mut line, &mut column, ch); }
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    advance(&mut i, &mut line, &mut column, '/');
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    advance(&mut i, &mut line, &mut column, '*');
                    advance(&mut i, &mut line, &mut column, '/');
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                { let ch = chars[i]; advance(&mut i, &mut line, &mut column, ch); }
            }
        } else if c == '"' || c == '`' || c == '\'' {
            let quote = c;
            let mut value = String::new();
            advance(&mut i, &mut line, &mut column, c);
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' && quote != '`' {
                    advance(&mut i, &mut line, &mut column, '\\');
                    if i < chars.len() {
                        value.push(chars[i]);
                        { let ch = chars[i]; advance(&mut i, &mut line, &mut column, ch); }
                    }
                    continue;
                }
                value.push(chars[i]);
                { let ch = chars[i]; advance(&mut i, &mut line, &mut column, ch); }
            }
            if i < chars.len() {
                advance(&mut i, &mut line, &mut column, quote);
            }
            tokens.push(Spanned { token: Token::Str(value), line: start_line, column: start_column });
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                { let ch = chars[i]; advance(&mut i, &mut line, &mut column, ch); }
            }
            tokens.push(Spanned { token: Token::Ident(word), line: start_line, column: start_column });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            advance(&mut i, &mut line, &mut column, ':');
            advance(&mut i, &mut line, &mut column, ':');
            tokens.push(Spanned { token: Token::Punct("::".into()), line: start_line, column: start_column });
        } else if c == '|' && chars.get(i + 1) == Some(&'|') {
            advance(&mut i, &mut line, &mut column, '|');
            advance(&mut i, &mut line, &mut column, '|');
            tokens.push(Spanned { token: Token::Punct("||".into()), line: start_line, column: start_column });
        } else {
            advance(&mut i, &mut line, &mut column, c);
            tokens.push(Spanned { token: Token::Punct(c.to_string()), line: start_line, column: start_column });
        }
    }
    tokens
}

fn finding(file: &str, line: usize, column: usize, message: &str, text: &str) -> String {
    let location = crate::span::Location::new(file, line, column, Some(text));
    format!("error: {message}\n{}", location.render())
}

/// The closest known name (edit distance at most 3), for "did you mean".
fn suggest<'a>(wanted: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|name| (edit_distance(wanted, name), name))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The lints over one source text.
pub fn lint_source(file: &str, text: &str, namespaces: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let tokens = tokenize(text);
    let mut findings = Vec::new();
    let mut step_names: HashMap<String, (usize, usize)> = HashMap::new();
    for (index, spanned) in tokens.iter().enumerate() {
        let next = |offset: usize| tokens.get(index + offset).map(|t| &t.token);
        if let Token::Ident(namespace) = &spanned.token {
            if next(1) == Some(&Token::Punct("::".into())) {
                if let (Some(Token::Ident(name)), Some(functions)) = (next(2), namespaces.get(namespace)) {
                    if !functions.contains(name) {
                        let hint = suggest(name, functions.iter())
                            .map(|s| format!("; did you mean {namespace}::{s}?"))
                            .unwrap_or_default();
                        let at = &tokens[index + 2];
                        findings.push(finding(
                            file,
                            at.line,
                            at.column,
                            &format!("unknown function {namespace}::{name}{hint}"),
                            text,
                        ));
                    }
                }
            }
            let is_call = namespace == "step"
                && next(1) == Some(&Token::Punct("(".into()))
                && (index == 0 || tokens[index - 1].token != Token::Punct("::".into()))
                && (index == 0 || tokens[index - 1].token != Token::Ident("fn".into()));
            if is_call {
                if let Some(Token::Str(name)) = next(2) {
                    let at = &tokens[index + 2];
                    if let Some((line, _)) = step_names.get(name) {
                        findings.push(finding(
                            file,
                            at.line,
                            at.column,
                            &format!("duplicate step name \"{name}\" (first used on line {line}); resume and --from match steps by name"),
                            text,
                        ));
                    } else {
                        step_names.insert(name.clone(), (at.line, at.column));
                    }
                }
            }
        }
    }
    findings
}
