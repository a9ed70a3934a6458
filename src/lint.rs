//! `glow-run check`: compile scripts (imports included) without running them, and lint what the
//! compiler cannot see: calls to functions a host namespace does not have (with a "did you
//! mean"), duplicate step names (resume and `--from` match steps by name), `step` without a
//! closure (the body would run before the step starts, or not at all), and two prompts sharing
//! an id (answers are keyed by id). Relative modules the script imports are linted too.
//!
//! [`compile`] is also how watch mode compiles an edit "to the side" before it swaps it in.

use crate::config::{Mode, RunSettings};
use crate::error::{EXIT_OK, Error};
use crate::redact::Redactor;
use crate::resolver::{STDLIB_PREFIX, SharedSources, display_path};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The host namespaces and their function names, read from an engine's metadata.
pub fn namespace_functions(engine: &rhai::Engine) -> BTreeMap<String, BTreeSet<String>> {
    let mut namespaces: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for signature in engine.gen_fn_signatures(false) {
        let Some((path, _)) = signature.split_once('(') else {
            continue;
        };
        let path = path.trim_start_matches("fn ").trim();
        if let Some((namespace, name)) = path.rsplit_once("::") {
            namespaces
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
    }
    namespaces
}

/// A script compiled (not run) with every host namespace registered and its imports resolved.
pub struct Compiled {
    pub engine: rhai::Engine,
    pub sources: SharedSources,
}

impl Compiled {
    /// The module files on disk the script imports (what watch mode must also watch).
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources.borrow().files.clone()
    }
}

/// Compiles `settings.text` the way a run would (same engine, same resolver), in dry-run mode so
/// a module's top-level code cannot change anything. Errors are rendered with their caret.
pub fn compile(
    settings: &RunSettings,
    runtime: &tokio::runtime::Handle,
) -> Result<Compiled, Error> {
    let (compiled, result) = compile_parts(settings, runtime);
    result.map(|()| compiled)
}

/// Like [`compile`], but keeps the engine and sources when it fails (check lints anyway).
fn compile_parts(
    settings: &RunSettings,
    runtime: &tokio::runtime::Handle,
) -> (Compiled, Result<(), Error>) {
    let mut settings = settings.clone();
    settings.mode = Mode::DryRun;
    let settings = Arc::new(settings);
    let crate::session::Session {
        engine, sources, ..
    } = crate::session::build(
        settings.clone(),
        Arc::new(Redactor::new()),
        Arc::new(crate::cancel::Cancel::new()),
        runtime.clone(),
        "check",
    );
    let result = engine
        .compile_into_self_contained(&rhai::Scope::new(), &settings.text)
        .map(|_| ())
        .map_err(|error| crate::diagnostic::compile_error(&error, &settings.source_name, &sources));
    (Compiled { engine, sources }, result)
}

pub fn check(scripts: &[PathBuf], stdlib: Option<PathBuf>) -> Result<i32, Error> {
    let runtime = crate::session::inspection_runtime()?;
    let mut findings = Vec::new();
    for script in scripts {
        let flags = crate::arguments::RunFlags {
            dry_run: true,
            stdlib: stdlib.clone(),
            ..Default::default()
        };
        let settings = match RunSettings::load(Some(script), None, flags, &Default::default()) {
            Ok(settings) => settings,
            Err(error) => {
                findings.push(error.render());
                continue;
            }
        };
        // A compile error is reported, and the lints still run: all problems in one go.
        let (compiled, result) = compile_parts(&settings, runtime.handle());
        if let Err(error) = result {
            findings.push(error.render());
        }
        let namespaces = namespace_functions(&compiled.engine);
        let mut lints = Lints::new(&namespaces);
        lints.source(&settings.source_name, &settings.text);
        // Relative modules (and a --stdlib being edited); the embedded stdlib is ours.
        let modules: Vec<(String, String)> = {
            let sources = compiled.sources.borrow();
            sources
                .files
                .iter()
                .filter_map(|file| {
                    [display_path(file), file.display().to_string()]
                        .into_iter()
                        .find_map(|name| sources.texts.get(&name).map(|text| (name, text.clone())))
                })
                .filter(|(name, _)| {
                    !name.starts_with(STDLIB_PREFIX) && *name != settings.source_name
                })
                .collect()
        };
        for (name, text) in &modules {
            lints.source(name, text);
        }
        findings.extend(lints.findings);
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
                {
                    let ch = chars[i];
                    advance(&mut i, &mut line, &mut column, ch);
                }
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
                {
                    let ch = chars[i];
                    advance(&mut i, &mut line, &mut column, ch);
                }
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
                        {
                            let ch = chars[i];
                            advance(&mut i, &mut line, &mut column, ch);
                        }
                    }
                    continue;
                }
                value.push(chars[i]);
                {
                    let ch = chars[i];
                    advance(&mut i, &mut line, &mut column, ch);
                }
            }
            if i < chars.len() {
                advance(&mut i, &mut line, &mut column, quote);
            }
            tokens.push(Spanned {
                token: Token::Str(value),
                line: start_line,
                column: start_column,
            });
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                {
                    let ch = chars[i];
                    advance(&mut i, &mut line, &mut column, ch);
                }
            }
            tokens.push(Spanned {
                token: Token::Ident(word),
                line: start_line,
                column: start_column,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            advance(&mut i, &mut line, &mut column, ':');
            advance(&mut i, &mut line, &mut column, ':');
            tokens.push(Spanned {
                token: Token::Punct("::".into()),
                line: start_line,
                column: start_column,
            });
        } else if c == '|' && chars.get(i + 1) == Some(&'|') {
            advance(&mut i, &mut line, &mut column, '|');
            advance(&mut i, &mut line, &mut column, '|');
            tokens.push(Spanned {
                token: Token::Punct("||".into()),
                line: start_line,
                column: start_column,
            });
        } else {
            advance(&mut i, &mut line, &mut column, c);
            tokens.push(Spanned {
                token: Token::Punct(c.to_string()),
                line: start_line,
                column: start_column,
            });
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
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// The lints over one source text (no other file involved).
pub fn lint_source(
    file: &str,
    text: &str,
    namespaces: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut lints = Lints::new(namespaces);
    lints.source(file, text);
    lints.findings
}

/// Lint state shared by a script and the modules it imports: step names and prompt ids are
/// global to a run, so a duplicate across files counts.
pub struct Lints<'a> {
    namespaces: &'a BTreeMap<String, BTreeSet<String>>,
    /// Step name -> where it was first used (file, line).
    steps: HashMap<String, (String, usize)>,
    /// Prompt id -> where it was first used (file, line).
    prompts: HashMap<String, (String, usize)>,
    pub findings: Vec<String>,
}

/// The prompt functions and whether their id comes from a role (`approve`) or a question.
const PROMPTS: [&str; 5] = ["confirm", "input", "select", "secret", "approve"];

impl<'a> Lints<'a> {
    pub fn new(namespaces: &'a BTreeMap<String, BTreeSet<String>>) -> Self {
        Self {
            namespaces,
            steps: HashMap::new(),
            prompts: HashMap::new(),
            findings: Vec::new(),
        }
    }

    pub fn source(&mut self, file: &str, text: &str) {
        let tokens = tokenize(text);
        for index in 0..tokens.len() {
            let Token::Ident(word) = &tokens[index].token else {
                continue;
            };
            let next = |offset: usize| tokens.get(index + offset).map(|t| &t.token);
            let previous = index.checked_sub(1).map(|i| &tokens[i].token);
            let after_path_or_fn = matches!(previous, Some(Token::Punct(p)) if p == "::" || p == ".")
                || previous == Some(&Token::Ident("fn".into()));
            if next(1) == Some(&punct("::"))
                && !after_path_or_fn
                && let Some(Token::Ident(name)) = next(2)
            {
                self.namespace_call(file, text, &tokens, index, word, name);
            }
            if word == "step" && next(1) == Some(&punct("(")) && !after_path_or_fn {
                self.step_call(file, text, &tokens, index);
            }
        }
    }

    fn namespace_call(
        &mut self,
        file: &str,
        text: &str,
        tokens: &[Spanned],
        index: usize,
        namespace: &str,
        name: &str,
    ) {
        let at = &tokens[index + 2];
        if let Some(functions) = self.namespaces.get(namespace)
            && !functions.contains(name)
        {
            let hint = suggest(name, functions.iter())
                .map(|s| format!("; did you mean {namespace}::{s}?"))
                .unwrap_or_default();
            self.findings.push(finding(
                file,
                at.line,
                at.column,
                &format!("unknown function {namespace}::{name}{hint}"),
                text,
            ));
            return;
        }
        if namespace == "prompt"
            && PROMPTS.contains(&name)
            && tokens.get(index + 3).map(|t| &t.token) == Some(&punct("("))
        {
            let args = arguments(tokens, index + 3);
            let Some(id) = prompt_id(name, &args) else {
                return;
            };
            if let Some((first_file, line)) = self.prompts.get(&id) {
                let place = first_use(first_file, *line, file);
                self.findings.push(finding(
                    file,
                    at.line,
                    at.column,
                    &format!(
                        "prompt id \"{id}\" is already used ({place}); answers are keyed by id: give one of them #{{ id: \"...\" }}"
                    ),
                    text,
                ));
            } else {
                self.prompts.insert(id, (file.to_owned(), at.line));
            }
        }
    }

    fn step_call(&mut self, file: &str, text: &str, tokens: &[Spanned], index: usize) {
        let at = &tokens[index];
        let args = arguments(tokens, index + 1);
        let name = match args.first() {
            Some(
                [
                    Spanned {
                        token: Token::Str(name),
                        ..
                    },
                ],
            ) => Some(name.clone()),
            _ => None,
        };
        let label = name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        if let (Some(name), Some([first, ..])) = (&name, args.first()) {
            if let Some((first_file, line)) = self.steps.get(name) {
                let place = first_use(first_file, *line, file);
                self.findings.push(finding(
                    file,
                    first.line,
                    first.column,
                    &format!("duplicate step name \"{name}\" (first used on {place}); resume and --from match steps by name"),
                    text,
                ));
            } else {
                self.steps
                    .insert(name.clone(), (file.to_owned(), first.line));
            }
        }
        let problem = match args.last() {
            _ if args.len() < 2 => Some((
                at,
                format!("step{label} has no body; write step(\"name\", || {{ ... }})"),
            )),
            Some(last) => body_problem(last).map(|why| {
                (
                    &last[0],
                    format!(
                        "the last argument of step{label} {why}; write step(\"name\", || {{ ... }})"
                    ),
                )
            }),
            None => None,
        };
        if let Some((at, message)) = problem {
            self.findings
                .push(finding(file, at.line, at.column, &message, text));
        }
    }
}

fn punct(text: &str) -> Token {
    Token::Punct(text.to_owned())
}

/// Why the body argument of `step` is not a closure, when that can be seen in the source:
/// a literal, a map or block, or a call (which runs before the step starts). A plain variable
/// may hold a closure and passes.
fn body_problem(arg: &[Spanned]) -> Option<&'static str> {
    let first = &arg.first()?.token;
    match first {
        Token::Punct(p) if p == "|" || p == "||" => None,
        Token::Str(_) => Some("is a string, not a closure"),
        Token::Punct(p) if p == "#" || p == "{" || p == "[" => Some("is a value, not a closure"),
        Token::Ident(word) if word == "Fn" => None,
        Token::Ident(word)
            if word == "true"
                || word == "false"
                || word.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Some("is a value, not a closure")
        }
        Token::Ident(_) if arg.get(1).map(|t| &t.token) == Some(&punct("(")) => {
            Some("is a call, not a closure: it runs before the step starts")
        }
        _ => None,
    }
}

/// The arguments of the call whose `(` is at `open`, split at top-level commas (a closure's
/// `|a, b|` parameter list does not split).
fn arguments(tokens: &[Spanned], open: usize) -> Vec<&[Spanned]> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    let mut i = open + 1;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::Punct(p) if p == "|" && i == start => {
                // Skip a closure's parameter list.
                i += 1;
                while i < tokens.len() && tokens[i].token != punct("|") {
                    i += 1;
                }
            }
            Token::Punct(p) if p == "(" || p == "[" || p == "{" => depth += 1,
            Token::Punct(p) if p == ")" || p == "]" || p == "}" => {
                if depth == 0 {
                    if i > start {
                        args.push(&tokens[start..i]);
                    }
                    return args;
                }
                depth -= 1;
            }
            Token::Punct(p) if p == "," && depth == 0 => {
                args.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    args
}

/// The id of a prompt call when it can be read from the source: `#{ id: "..." }` in its
/// options, else `approve_<role>` or the question, lower-cased, each run of characters outside
/// a-z0-9 turned into `_`.
fn prompt_id(function: &str, args: &[&[Spanned]]) -> Option<String> {
    for arg in args {
        if arg.first().map(|t| &t.token) != Some(&punct("#")) {
            continue;
        }
        let mut depth = 0usize;
        for (i, spanned) in arg.iter().enumerate() {
            match &spanned.token {
                Token::Punct(p) if p == "{" || p == "(" || p == "[" => depth += 1,
                Token::Punct(p) if p == "}" || p == ")" || p == "]" => {
                    depth = depth.saturating_sub(1)
                }
                Token::Ident(key) | Token::Str(key)
                    if depth == 1
                        && key == "id"
                        && arg.get(i + 1).map(|t| &t.token) == Some(&punct(":")) =>
                {
                    if let Some(Token::Str(id)) = arg.get(i + 2).map(|t| &t.token) {
                        return Some(id.clone());
                    }
                }
                _ => {}
            }
        }
    }
    match args.first()? {
        [
            Spanned {
                token: Token::Str(text),
                ..
            },
        ] if function == "approve" => Some(prompt_id_of(&format!("approve_{text}"))),
        [
            Spanned {
                token: Token::Str(text),
                ..
            },
        ] => Some(prompt_id_of(text)),
        _ => None,
    }
}

/// The prompt id rule: lower case, each run of characters outside a-z0-9 becomes `_`.
pub fn prompt_id_of(text: &str) -> String {
    let mut id = String::new();
    let mut in_run = false;
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
            in_run = false;
        } else if !in_run {
            id.push('_');
            in_run = true;
        }
    }
    id
}

/// Where a name was first used, as a finding on `file` should say it.
fn first_use(first_file: &str, line: usize, file: &str) -> String {
    if first_file == file {
        format!("line {line}")
    } else {
        format!("{first_file}:{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_follow_the_rule() {
        assert_eq!(
            prompt_id_of("Deploy to PRODUCTION now?"),
            "deploy_to_production_now_"
        );
        assert_eq!(
            prompt_id_of("approve_release-manager"),
            "approve_release_manager"
        );
    }

    #[test]
    fn closure_parameters_do_not_split_arguments() {
        let tokens = tokenize(r#"step("a", |x, y| x + y)"#);
        assert_eq!(arguments(&tokens, 1).len(), 2);
    }
}
