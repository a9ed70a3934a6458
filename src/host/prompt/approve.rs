//! `prompt::approve(role)`: a sign-off, either signed or typed.
//!
//! Signed (a live run bound to a saved plan with `--plan`): satisfied only by an approval whose
//! SSH signature verifies over the plan's hash, by a principal `[approvals] roles` lists for the
//! role and `allowed_signers` holds the key for (see `approval::Rules`); one principal cannot
//! approve two roles of a run. With `--state` and a `wait` (`opts.wait` or `[approvals] wait`)
//! the run waits for the signature, printing whom it waits for and the command that signs, and
//! polls the shared state every [`POLL`]. The `approval` event carries the signature itself.
//!
//! Typed (no saved plan, or `require_signatures` off and no signature verifies): an answer
//! from the terminal, `--answers` or `GLOW_ANSWER_APPROVE_<ROLE>` in the real environment. A
//! word of refusal ("no", "decline", "reject", "cancel", "abort", "nope", ...) declines; any
//! other answer must look like an identity (an e-mail address or a principal listed in
//! `[approvals] roles`), so "maybe" or "ok" is never recorded as a person's approval.

use super::{Kind, Prompt, answer_text, approve_id, cascade, parse_bool, record};
use crate::approval::Approval;
use crate::event::{ApprovalEvent, Body, Extra};
use crate::host::{Asking, HostContext, map_of};
use crate::options::{HostResult, Options, host_error};
use crate::plan_binding::{Binding, Origin};
use crate::shared_plans::POLL;
use rhai::{Dynamic, Map};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Answers that decline an approval (besides false/no/n/0/off).
const REFUSALS: [&str; 9] = [
    "decline", "declined", "reject", "rejected", "refuse", "deny", "cancel", "abort", "nope",
];

/// What an approval answer says.
enum Verdict {
    Approved(String),
    Declined,
}

fn is_refusal(text: &str) -> bool {
    let word = text.trim().to_ascii_lowercase();
    REFUSALS.contains(&word.as_str())
}

fn listed_principals(ctx: &HostContext) -> Vec<String> {
    ctx.policy
        .approvals
        .roles
        .values()
        .flatten()
        .cloned()
        .collect()
}

/// An e-mail address (`local@domain.tld`, no spaces) or a principal listed in `[approvals] roles`.
fn looks_like_identity(listed: &[String], text: &str) -> bool {
    let listed = listed
        .iter()
        .any(|principal| principal.eq_ignore_ascii_case(text));
    let email = text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
    }) && !text.chars().any(char::is_whitespace);
    listed || email
}

fn verdict(ctx: &HostContext, id: &str, value: &Value) -> HostResult<Verdict> {
    match parse_bool(value) {
        Some(true) => return Ok(Verdict::Approved(crate::identity::approver())),
        Some(false) => return Ok(Verdict::Declined),
        None => {}
    }
    let identity = answer_text(value).trim().to_owned();
    if is_refusal(&identity) {
        return Ok(Verdict::Declined);
    }
    if identity.is_empty() || !looks_like_identity(&listed_principals(ctx), &identity) {
        return Err(host_error(format!(
            "prompt '{id}': the answer '{identity}' is not an identity: an approval is an e-mail address or a principal listed in [approvals] roles ({}), true (GLOW_APPROVER, else git user.email), or no to decline",
            ctx.policy.file_label()
        )));
    }
    Ok(Verdict::Approved(identity))
}

pub(super) fn approve(ctx: &HostContext, role: &str, options: Map) -> HostResult<Map> {
    let mut options = Options::new("prompt::approve", options);
    let id = options.string("id")?.unwrap_or_else(|| approve_id(role));
    let question = options
        .string("question")?
        .unwrap_or_else(|| format!("Sign-off as {role}"));
    let wait = options
        .duration("wait")?
        .unwrap_or(ctx.policy.approvals.wait);
    options.finish()?;
    // Only a live run is bound to a saved plan (--plan conflicts with --dry-run).
    if let Some(binding) = ctx.binding.get() {
        match signed(ctx, binding, role, wait)? {
            Ok((approval, fingerprint)) => return Ok(record_signed(ctx, &id, role, &approval, &fingerprint)),
            Err(why) if ctx.policy.approvals.require_signatures => return Err(host_error(why)),
            Err(why) => ctx.log(
                "warn",
                &format!("{why}\n[approvals] require_signatures is off: a typed approval is accepted instead"),
            ),
        }
    }
    typed(ctx, &id, role, &question)
}

/// The command an approver runs to sign this plan as `role`.
fn sign_command(ctx: &HostContext, binding: &Binding, role: &str) -> String {
    let plan = match &binding.origin {
        Origin::File(path) => path.display().to_string(),
        Origin::Shared => binding.plan.hash.clone(),
    };
    let state = ctx
        .settings
        .state_url
        .as_deref()
        .map(|url| format!(" --state '{url}'"))
        .unwrap_or_default();
    format!("glow-run approve {plan} --role {role}{state}")
}

/// The first approval for `role` that verifies, or why none does.
fn pick(
    ctx: &HostContext,
    binding: &Binding,
    role: &str,
    approvals: &[Approval],
) -> Result<(Approval, String), String> {
    let initiator = ctx.initiator().to_owned();
    let rules = crate::plan_binding::rules(&ctx.policy, binding.signers.as_ref(), Some(&initiator));
    let mut reasons = Vec::new();
    for approval in approvals.iter().filter(|a| a.role == role) {
        match rules.verify(approval, &binding.plan.hash, chrono::Utc::now()) {
            Ok(fingerprint) => {
                let used = binding.used.borrow();
                match used.get(&approval.principal.to_lowercase()).filter(|r| *r != role) {
                    Some(other) => reasons.push(format!(
                        "{} already approved role '{other}' of this plan; one principal cannot approve two roles",
                        approval.principal
                    )),
                    None => return Ok((approval.clone(), fingerprint)),
                }
            }
            Err(why) => reasons.push(format!("{} ({}): {why}", approval.principal, approval.key)),
        }
    }
    let hash = &binding.plan.hash;
    Err(if reasons.is_empty() {
        format!(
            "approval '{role}' needs a signature on plan {hash}, and the plan has none for {role}"
        )
    } else {
        format!(
            "approval '{role}' refused: no signature for {role} on plan {hash} verifies:\n  - {}",
            reasons.join("\n  - ")
        )
    })
}

/// Looks for a verifying approval in the plan file and the shared state, waiting up to `wait`
/// (with `--state`) for one to arrive. `Ok(Err(why))`: none verifies.
fn signed(
    ctx: &HostContext,
    binding: &Binding,
    role: &str,
    wait: Duration,
) -> HostResult<Result<(Approval, String), String>> {
    let command = sign_command(ctx, binding, role);
    let Some(url) = ctx.settings.state_url.clone() else {
        return Ok(pick(ctx, binding, role, &binding.file_approvals())
            .map_err(|why| format!("{why}; sign with: {command}")));
    };
    let deadline = Instant::now() + wait;
    let found = ctx.block_on(async {
        let mut connection = crate::shared_plans::connect(&url).await?;
        let mut announced = false;
        loop {
            let mut approvals = binding.file_approvals();
            approvals.extend(crate::shared_plans::approvals(&mut connection, &binding.plan.hash).await?);
            match pick(ctx, binding, role, &approvals) {
                Ok(found) => return Ok(Ok(found)),
                Err(why) if Instant::now() >= deadline => return Ok(Err(format!("{why}; sign with: {command}"))),
                Err(_) => {}
            }
            if !announced {
                let principals = ctx.policy.approvals.roles.get(role).cloned().unwrap_or_default();
                ctx.log(
                    "info",
                    &format!(
                        "waiting up to {} for a signature as {role} ({}) on plan {}; sign with: {command}",
                        humantime::format_duration(wait),
                        principals.join(", "),
                        binding.plan.hash
                    ),
                );
                announced = true;
            }
            tokio::time::sleep(POLL).await;
        }
    })?;
    found.map_err(|why: String| host_error(format!("shared state: {}", ctx.redact(&why))))
}

fn record_signed(
    ctx: &HostContext,
    id: &str,
    role: &str,
    approval: &Approval,
    fingerprint: &str,
) -> Map {
    binding_used(ctx, &approval.principal, role);
    let time = crate::journal::now_rfc3339();
    let extra = Extra::from_iter([
        ("principal".to_owned(), json!(approval.principal)),
        ("key".to_owned(), json!(fingerprint)),
        ("signature".to_owned(), json!(approval.signature)),
        ("signed_at".to_owned(), json!(approval.time)),
        ("method".to_owned(), json!("ssh-signature")),
    ]);
    ctx.record(Body::Approval(ApprovalEvent {
        id: id.to_owned(),
        role: role.to_owned(),
        approver: approval.principal.clone(),
        script_sha256: ctx.settings.sha256.clone(),
        plan_hash: ctx.plan_hash(),
        answer: String::new(),
        source: "signature".into(),
        extra,
    }));
    let mut map = approval_map(ctx, id, role, &approval.principal, &ctx.plan_hash(), false);
    map.insert("key".into(), Dynamic::from(fingerprint.to_owned()));
    map.insert("method".into(), Dynamic::from("ssh-signature".to_owned()));
    map.insert("time".into(), Dynamic::from(time));
    map
}

fn binding_used(ctx: &HostContext, principal: &str, role: &str) {
    if let Some(binding) = ctx.binding.get() {
        binding
            .used
            .borrow_mut()
            .insert(principal.to_lowercase(), role.to_owned());
    }
}

/// A typed approval: an answer given or typed at the terminal.
fn typed(ctx: &HostContext, id: &str, role: &str, question: &str) -> HostResult<Map> {
    let plan_hash = ctx.plan_hash();
    let prompt = Prompt::new(id, Kind::Approve, question);
    let text = format!(
        "{question} (plan {}): type your identity to approve, or \"no\" to decline",
        plan_hash.get(..12).unwrap_or(&plan_hash)
    );
    let listed = listed_principals(ctx);
    let ask = move |term: &console::Term, theme: &dialoguer::theme::ColorfulTheme| {
        dialoguer::Input::<String>::with_theme(theme)
            .with_prompt(text)
            .validate_with(move |text: &String| -> Result<(), &str> {
                let text = text.trim();
                if parse_bool(&json!(text)).is_some() || is_refusal(text) || looks_like_identity(&listed, text) {
                    Ok(())
                } else {
                    Err("type your identity (your e-mail, or a principal listed in [approvals] roles), or no")
                }
            })
            .interact_text_on(term)
            .map(Value::String)
    };
    let answered = cascade(ctx, &prompt, Asking::SignOff(role), Ok, ask)?;
    let (source, planned) = (answered.source, answered.planned);
    let Some(answer) = answered.value else {
        record(ctx, &prompt, Value::Null, source, planned);
        return Ok(approval_map(ctx, id, role, "", &plan_hash, true));
    };
    record(ctx, &prompt, answer.clone(), source, planned);
    let approver = match verdict(ctx, id, &answer)? {
        Verdict::Approved(approver) => approver,
        Verdict::Declined => {
            return Err(host_error(format!(
                "approval '{role}' was declined (prompt '{id}')"
            )));
        }
    };
    if ctx.policy.approvals.distinct_from_initiator {
        let initiator = ctx.initiator();
        if approver.trim().eq_ignore_ascii_case(initiator.trim()) {
            return Err(host_error(format!(
                "policy refuses the approval '{role}' by {approver}: {initiator} started this run and \
                 [approvals] distinct_from_initiator = true ({}); another person must approve",
                ctx.policy.file_label()
            )));
        }
    }
    if planned {
        return Ok(approval_map(ctx, id, role, &approver, &plan_hash, true));
    }
    binding_used(ctx, &approver, role);
    let result = approval_map(ctx, id, role, &approver, &plan_hash, false);
    let extra = Extra::from_iter([
        ("principal".to_owned(), json!(approver)),
        ("method".to_owned(), json!("typed")),
    ]);
    ctx.record(Body::Approval(ApprovalEvent {
        id: id.to_owned(),
        role: role.to_owned(),
        approver: approver.clone(),
        script_sha256: ctx.settings.sha256.clone(),
        plan_hash: plan_hash.clone(),
        answer: answer_text(&answer),
        source: source.as_str().to_owned(),
        extra,
    }));
    Ok(result)
}

fn approval_map(
    ctx: &HostContext,
    id: &str,
    role: &str,
    approver: &str,
    plan_hash: &str,
    planned: bool,
) -> Map {
    map_of([
        ("id", Dynamic::from(id.to_owned())),
        ("role", Dynamic::from(role.to_owned())),
        ("approver", Dynamic::from(approver.to_owned())),
        ("time", Dynamic::from(crate::journal::now_rfc3339())),
        ("script_sha256", Dynamic::from(ctx.settings.sha256.clone())),
        ("plan_hash", Dynamic::from(plan_hash.to_owned())),
        ("planned", Dynamic::from(planned)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_words_decline() {
        for word in ["decline", "Reject", " cancel ", "ABORT", "nope"] {
            assert!(is_refusal(word), "{word}");
        }
        assert!(!is_refusal("alice@example.com"));
    }
}
