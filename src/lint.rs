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

/// Splits source into tokens with Rhai's own tokenizer (so strings, comments, escapes and
/// numbers are read exactly as the compiler reads them). Keywords become `Ident`s, `#{` becomes
/// `#` `{`, and a string with interpolation is one `Str` per literal part.
pub fn tokenize(text: &str) -> Vec<Spanned> {
    let engine = rhai::Engine::new_raw();
    let inputs = [text];
    let (stream, _control) = engine.lex(&inputs);
    let mut tokens = Vec::new();
    for (token, position) in stream {
        let (Some(line), Some(column)) = (position.line(), position.position()) else {
            continue;
        };
        let mut push = |token: Token, column: usize| {
            tokens.push(Spanned {
                token,
                line,
                column,
            });
        };
        match token {
            rhai::Token::EOF => break,
            rhai::Token::LexError(_) | rhai::Token::Comment(_) => {}
            rhai::Token::Identifier(name)
            | rhai::Token::Reserved(name)
            | rhai::Token::Custom(name) => push(Token::Ident(name.to_string()), column),
            rhai::Token::StringConstant(text) | rhai::Token::InterpolatedString(text) => {
                push(Token::Str(text.to_string()), column);
            }
            rhai::Token::MapStart => {
                push(punct("#"), column);
                push(punct("{"), column + 1);
            }
            rhai::Token::Unit => {
                push(punct("("), column);
                push(punct(")"), column + 1);
            }
            // A number or character literal: only its text matters to the lints.
            other if !other.is_literal() => push(Token::Ident(other.to_string()), column),
            other => {
                let syntax = other.literal_syntax();
                if syntax.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    push(Token::Ident(syntax.to_owned()), column);
                } else {
                    push(punct(syntax), column);
                }
            }
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
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
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
        ] if function == "approve" => Some(crate::prompt_id::approve_id(text)),
        [
            Spanned {
                token: Token::Str(text),
                ..
            },
        ] => Some(crate::prompt_id::slug(text)),
        _ => None,
    }
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
    fn prompt_ids_follow_the_rule_prompt_uses() {
        let tokens = tokenize(r#"prompt::confirm("???"); prompt::approve("release-manager")"#);
        let confirm = arguments(&tokens, 3);
        assert_eq!(prompt_id("confirm", &confirm).as_deref(), Some("prompt"));
        let approve = arguments(&tokens, 10);
        assert_eq!(
            prompt_id("approve", &approve).as_deref(),
            Some("approve_release_manager")
        );
    }

    #[test]
    fn the_tokenizer_is_rhais() {
        let tokens = tokenize("let m = #{ id: \"a\\\"b\" }; // step(x)\nfn f() {}");
        let texts: Vec<String> = tokens
            .iter()
            .map(|t| match &t.token {
                Token::Ident(s) | Token::Punct(s) => s.clone(),
                Token::Str(s) => format!("str:{s}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                "let", "m", "=", "#", "{", "id", ":", "str:a\"b", "}", ";", "fn", "f", "(", ")",
                "{", "}"
            ]
        );
        assert_eq!((tokens[10].line, tokens[10].column), (2, 1));
    }

    #[test]
    fn closure_parameters_do_not_split_arguments() {
        let tokens = tokenize(r#"step("a", |x, y| x + y)"#);
        assert_eq!(arguments(&tokens, 1).len(), 2);
    }
}
