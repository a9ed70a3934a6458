//! Prompts: `prompt::confirm`, `prompt::input`, `prompt::select`, `prompt::secret` and
//! `prompt::approve` (a sign-off recorded with the approver, the time, the script's SHA-256 and
//! the hash of the plan so far).
//!
//! Every prompt has an id: `opts.id`, else the question slugged ([`slug`]); `approve(role)` has
//! `approve_<role slugged>`. An answer comes from the first of:
//! 1. `--answers FILE` (TOML or JSON keyed by id),
//! 2. the environment variable `GLOW_ANSWER_<ID>` ([`env_name`]) of the real process
//!    environment (`--env-file` does not count: a workspace file must not answer prompts),
//! 3. `--yes` (confirms only, never an approval),
//! 4. a person at the controlling terminal (`/dev/tty`, so it works when output is piped).
//!
//! With none of these a live run fails at once (exit 1), naming the id and the ways to answer:
//! it never hangs and never assumes yes. A dry run never asks: it takes a given answer or the
//! default, and lists the question (or sign-off) in the plan as something a live run needs.
//! Every prompt journals a `prompt` event `{id, type, question, answer, source, planned}` (`type`:
//! confirm|input|select|secret|approve, as `kind` is the event's own; a secret's answer as
//! `[redacted]`). Approvals (typed or signed) live in `approve.rs`.

pub mod answers;
mod approve;
mod register;
pub mod terminal;

pub use register::register;

pub use answers::Answers;

use super::{Asking, HostContext};
use crate::event::{Body, Extra, PromptEvent};
use crate::options::{HostResult, Options, host_error};
use console::Term;
use dialoguer::theme::ColorfulTheme;
use rhai::{Array, Map};
use serde_json::{Value, json};
use terminal::Tty;

/// What kind of prompt (journaled as `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Confirm,
    Input,
    Select,
    Secret,
    Approve,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Confirm => "confirm",
            Kind::Input => "input",
            Kind::Select => "select",
            Kind::Secret => "secret",
            Kind::Approve => "approve",
        }
    }
}

/// Where an answer came from (journaled as `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    AnswersFile,
    Env,
    Yes,
    Terminal,
    Default,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::AnswersFile => "answers-file",
            Source::Env => "env",
            Source::Yes => "yes",
            Source::Terminal => "terminal",
            Source::Default => "default",
        }
    }
}

pub use crate::prompt_id::{approve_id, slug};

/// `GLOW_ANSWER_<ID>`: the id in upper case, any character other than `A-Z0-9_` as `_`.
pub fn env_name(id: &str) -> String {
    let upper: String = id
        .to_uppercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("GLOW_ANSWER_{upper}")
}

/// An answer given without asking: answers file, environment, `--yes` (confirms only).
fn given(ctx: &HostContext, id: &str, kind: Kind) -> Option<(Value, Source)> {
    let trimmed = id.trim_matches('_');
    let ids = if trimmed != id && !trimmed.is_empty() {
        vec![id, trimmed]
    } else {
        vec![id]
    };
    for id in &ids {
        if let Some(value) = ctx.settings.answers.get(id) {
            return Some((value.clone(), Source::AnswersFile));
        }
    }
    // The real process environment only: a workspace's --env-file must not answer prompts.
    for id in &ids {
        let name = env_name(id);
        if let Some(value) = std::env::var(&name).ok().filter(|v| !v.is_empty()) {
            return Some((Value::String(value), Source::Env));
        }
        if ctx.settings.env_overlay.contains_key(&name) {
            ctx.log(
                "warn",
                &format!("{name} in --env-file is ignored: prompts are answered by --answers, the real environment or a person"),
            );
        }
    }
    if kind == Kind::Confirm && ctx.settings.flags.yes {
        return Some((Value::Bool(true), Source::Yes));
    }
    None
}

/// The error of a live prompt with no answer and no terminal: names the id and how to answer.
fn unanswered(id: &str, kind: Kind) -> Box<rhai::EvalAltResult> {
    let example = match kind {
        Kind::Confirm => "true",
        Kind::Approve => "\"you@example.com\"",
        _ => "\"...\"",
    };
    let yes = if kind == Kind::Confirm {
        "or run with --yes (answers every confirm with yes)".to_owned()
    } else {
        format!("(--yes answers confirms only, not this {})", kind.as_str())
    };
    host_error(format!(
        "prompt '{id}' needs an answer and there is no terminal to ask: give it with --answers FILE \
         (`{id} = {example}`), or the environment variable {}, {yes}",
        env_name(id)
    ))
}

fn answer_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn parse_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().and_then(|n| match n {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "1" | "on" => Some(true),
            "n" | "no" | "false" | "0" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Journals the `prompt` event (and prints it through the reporter).
fn record(ctx: &HostContext, prompt: &Prompt<'_>, answer: Value, source: Source, planned: bool) {
    ctx.record(Body::Prompt(PromptEvent {
        id: prompt.id.to_owned(),
        prompt_type: prompt.kind.as_str().to_owned(),
        question: prompt.question.to_owned(),
        answer,
        source: source.as_str().to_owned(),
        planned,
        extra: Extra::new(),
    }));
}

/// A prompt being answered: its id, kind and question.
struct Prompt<'a> {
    id: &'a str,
    kind: Kind,
    question: &'a str,
}

impl<'a> Prompt<'a> {
    fn new(id: &'a str, kind: Kind, question: &'a str) -> Self {
        Self { id, kind, question }
    }
}

/// An answer from the cascade: `value` is `None` when a dry run had none given (it asks no one).
struct Answered<T> {
    value: Option<T>,
    source: Source,
    planned: bool,
}

/// The one answer cascade of every prompt: the answers file, the environment or --yes (read by
/// `parse`), else a person at the terminal (`ask`, the dialoguer widget, given the terminal and
/// the theme) in a live run, else an error naming the ways to answer; a dry run asks no one (the
/// context decides, see [`HostContext::question`]).
fn cascade<T: Send + 'static>(
    ctx: &HostContext,
    prompt: &Prompt<'_>,
    asking: Asking<'_>,
    parse: impl FnOnce(Value) -> HostResult<T>,
    ask: impl FnOnce(&Term, &ColorfulTheme) -> dialoguer::Result<T> + Send + 'static,
) -> HostResult<Answered<T>> {
    let given = match given(ctx, prompt.id, prompt.kind) {
        Some((value, source)) => Some((parse(value)?, source)),
        None => None,
    };
    let reply = ctx.question(asking, given, || {
        let tty = Tty::open().ok_or_else(|| unanswered(prompt.id, prompt.kind))?;
        let answer = tty.ask(ctx, prompt.id, move |term| {
            ask(term, &ColorfulTheme::default())
        })?;
        Ok((answer, Source::Terminal))
    })?;
    let (value, source) = match reply.answer {
        Some((value, source)) => (Some(value), source),
        None => (None, Source::Default),
    };
    Ok(Answered {
        value,
        source,
        planned: reply.planned,
    })
}

// --- confirm ---------------------------------------------------------------------------------

fn confirm(ctx: &HostContext, question: &str, options: Map) -> HostResult<bool> {
    let mut options = Options::new("prompt::confirm", options);
    let id = options.string("id")?.unwrap_or_else(|| slug(question));
    let default = match options.bool("default_value")? {
        Some(value) => Some(value),
        None => options.bool("default")?,
    };
    options.finish()?;
    let prompt = Prompt::new(&id, Kind::Confirm, question);
    let parse = |value: Value| {
        parse_bool(&value).ok_or_else(|| {
            host_error(format!(
                "prompt '{id}': the answer '{}' is not yes or no (use true/false, yes/no, y/n)",
                answer_text(&value)
            ))
        })
    };
    let text = question.to_owned();
    let ask = move |term: &Term, theme: &ColorfulTheme| {
        let mut confirm = dialoguer::Confirm::with_theme(theme).with_prompt(text);
        if let Some(default) = default {
            confirm = confirm.default(default);
        }
        confirm.interact_on(term)
    };
    let answered = cascade(ctx, &prompt, Asking::Answer(&id), parse, ask)?;
    let answer = answered.value.unwrap_or(default.unwrap_or(false));
    record(
        ctx,
        &prompt,
        json!(answer),
        answered.source,
        answered.planned,
    );
    Ok(answer)
}

// --- input -----------------------------------------------------------------------------------

fn input(ctx: &HostContext, question: &str, options: Map) -> HostResult<String> {
    let mut options = Options::new("prompt::input", options);
    let id = options.string("id")?.unwrap_or_else(|| slug(question));
    let default = match options.string("default_value")? {
        Some(value) => Some(value),
        None => options.string("default")?,
    };
    let pattern = options.string("pattern")?;
    options.finish()?;
    let regex = match &pattern {
        Some(pattern) => Some(
            regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| host_error(format!("prompt::input '{id}': invalid pattern: {e}")))?,
        ),
        None => None,
    };
    let prompt = Prompt::new(&id, Kind::Input, question);
    let parse = |value: Value| {
        let answer = answer_text(&value);
        if let (Some(regex), Some(pattern)) = (&regex, &pattern)
            && !regex.is_match(&answer)
        {
            return Err(host_error(format!(
                "prompt '{id}': the answer '{answer}' does not match the pattern {pattern}"
            )));
        }
        Ok(answer)
    };
    let (text, default_text) = (question.to_owned(), default.clone());
    let (regex_again, pattern_again) = (regex.clone(), pattern.clone());
    let ask = move |term: &Term, theme: &ColorfulTheme| {
        let mut input = dialoguer::Input::<String>::with_theme(theme).with_prompt(text);
        if let Some(default) = default_text {
            input = input.default(default);
        }
        match (regex_again, pattern_again) {
            (Some(regex), Some(pattern)) => {
                input = input.validate_with(move |text: &String| -> Result<(), String> {
                    if regex.is_match(text) {
                        Ok(())
                    } else {
                        Err(format!("must match {pattern}"))
                    }
                });
            }
            _ => input = input.allow_empty(true),
        }
        input.interact_text_on(term)
    };
    let answered = cascade(ctx, &prompt, Asking::Answer(&id), parse, ask)?;
    let answer = answered
        .value
        .unwrap_or_else(|| default.clone().unwrap_or_default());
    record(
        ctx,
        &prompt,
        json!(answer),
        answered.source,
        answered.planned,
    );
    Ok(answer)
}

// --- select ----------------------------------------------------------------------------------

fn select(ctx: &HostContext, question: &str, choices: Array, options: Map) -> HostResult<String> {
    let mut options = Options::new("prompt::select", options);
    let id = options.string("id")?.unwrap_or_else(|| slug(question));
    let default = options
        .value("default_value")
        .or_else(|| options.value("default"));
    options.finish()?;
    let choices: Vec<String> = choices.iter().map(|choice| choice.to_string()).collect();
    if choices.is_empty() {
        return Err(host_error(format!(
            "prompt::select '{id}': no options to choose from"
        )));
    }
    // An option is named by its text or its 0-based index.
    let pick = |value: &Value| -> Option<usize> {
        let text = answer_text(value);
        choices
            .iter()
            .position(|choice| *choice == text)
            .or_else(|| {
                let index = value.as_u64().or_else(|| text.trim().parse::<u64>().ok())?;
                usize::try_from(index).ok().filter(|&i| i < choices.len())
            })
    };
    let default_index = match &default {
        None => None,
        Some(value) => Some(
            pick(&crate::host::json::from_dynamic(value)).ok_or_else(|| {
                host_error(format!(
                    "prompt::select '{id}': the default {value} is not one of the options"
                ))
            })?,
        ),
    };
    let prompt = Prompt::new(&id, Kind::Select, question);
    let parse = |value: Value| {
        pick(&value).ok_or_else(|| {
            host_error(format!(
                "prompt '{id}': the answer '{}' is not one of the options: {}",
                answer_text(&value),
                choices.join(", ")
            ))
        })
    };
    let (text, items) = (question.to_owned(), choices.clone());
    let ask = move |term: &Term, theme: &ColorfulTheme| {
        dialoguer::Select::with_theme(theme)
            .with_prompt(text)
            .items(&items)
            .default(default_index.unwrap_or(0))
            .interact_on(term)
    };
    let answered = cascade(ctx, &prompt, Asking::Answer(&id), parse, ask)?;
    let answer = choices[answered.value.unwrap_or(default_index.unwrap_or(0))].clone();
    record(
        ctx,
        &prompt,
        json!(answer),
        answered.source,
        answered.planned,
    );
    Ok(answer)
}

// --- secret ----------------------------------------------------------------------------------

fn secret(ctx: &HostContext, question: &str, options: Map) -> HostResult<String> {
    let mut options = Options::new("prompt::secret", options);
    let id = options.string("id")?.unwrap_or_else(|| slug(question));
    options.finish()?;
    let prompt = Prompt::new(&id, Kind::Secret, question);
    let parse = |value: Value| Ok(answer_text(&value));
    let text = question.to_owned();
    let ask = move |term: &Term, theme: &ColorfulTheme| {
        dialoguer::Password::with_theme(theme)
            .with_prompt(text)
            .interact_on(term)
    };
    let answered = cascade(ctx, &prompt, Asking::Answer(&id), parse, ask)?;
    let answer = answered.value.unwrap_or_default();
    ctx.register_secret(&answer);
    record(
        ctx,
        &prompt,
        json!("[redacted]"),
        answered.source,
        answered.planned,
    );
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugged_questions() {
        assert_eq!(slug("Deploy to production?"), "deploy_to_production_");
        assert_eq!(slug("Release tag"), "release_tag");
        assert_eq!(slug("  Tag -- v1.2.3 ok?? "), "_tag_v1_2_3_ok_");
        assert_eq!(slug("???"), "prompt");
        assert_eq!(env_name("approve_security"), "GLOW_ANSWER_APPROVE_SECURITY");
        assert_eq!(env_name("release.tag-name"), "GLOW_ANSWER_RELEASE_TAG_NAME");
    }

    #[test]
    fn yes_and_no_in_many_spellings() {
        assert_eq!(parse_bool(&json!("Yes")), Some(true));
        assert_eq!(parse_bool(&json!("n")), Some(false));
        assert_eq!(parse_bool(&json!(true)), Some(true));
        assert_eq!(parse_bool(&json!("maybe")), None);
    }
}
