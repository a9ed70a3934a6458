//! Signed approvals: an OpenSSH SSHSIG (namespace [`NAMESPACE`]) over a plan's hash, made with
//! the SSH key an approver already signs git commits with, and the OpenSSH `allowed_signers`
//! file that says which key belongs to whom. [`Rules::verify`] is the one check behind
//! `plan show`, `approve` and `prompt::approve` in a run bound to a plan, so the three can
//! never disagree about whether an approval counts.
//!
//! The message signed is the plan hash as 64 lowercase hex characters without a newline, so
//! `printf %s "$HASH" | ssh-keygen -Y sign -n glow-run-plan -f KEY` makes a valid signature and
//! `ssh-keygen -Y verify` accepts glow-run's.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The SSHSIG namespace of plan approvals (never `git` or `file`: a signature made for a commit
/// cannot be replayed as an approval).
pub const NAMESPACE: &str = "glow-run-plan";

/// One approval of a plan, as stored in the plan file and the shared state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub role: String,
    pub principal: String,
    /// The signing key's `SHA256:` fingerprint.
    pub key: String,
    /// The armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`).
    pub signature: String,
    pub time: String,
}

/// Signs a plan hash with a (decrypted) private key; returns the armored signature.
pub fn sign(key: &PrivateKey, plan_hash: &str) -> Result<String, String> {
    let signature = key
        .sign(NAMESPACE, HashAlg::Sha512, plan_hash.as_bytes())
        .map_err(|e| format!("signing failed: {e}"))?;
    signature
        .to_pem(LineEnding::LF)
        .map_err(|e| format!("encoding the signature: {e}"))
}

/// Parses an armored SSHSIG, with a clear error for anything else.
pub fn parse_signature(armored: &str) -> Result<SshSig, String> {
    SshSig::from_pem(armored.trim().as_bytes()).map_err(|e| {
        format!("malformed signature ({e}): expected an armored SSH signature (-----BEGIN SSH SIGNATURE-----) as `ssh-keygen -Y sign` writes it")
    })
}

pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One line of an `allowed_signers` file.
#[derive(Debug, Clone)]
struct Signer {
    line: usize,
    principals: String,
    namespaces: Option<Vec<String>>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    key: KeyData,
}

/// An OpenSSH `allowed_signers` file (ssh-keygen(1), "ALLOWED SIGNERS").
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    pub path: PathBuf,
    signers: Vec<Signer>,
}

/// Splits a line into fields at unquoted whitespace (quotes kept inside option values).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits options at unquoted commas: `namespaces="a,b",valid-after=2024`.
fn options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

fn looks_like_key_type(field: &str) -> bool {
    field.starts_with("ssh-") || field.starts_with("ecdsa-") || field.starts_with("sk-")
}

/// `YYYYMMDD[HHMM[SS]][Z]`: UTC with `Z`, else local time (as ssh-keygen reads it).
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(digits) => (digits, true),
        None => (text, false),
    };
    let padded = match digits.len() {
        8 => format!("{digits}000000"),
        12 => format!("{digits}00"),
        14 => digits.to_owned(),
        _ => return Err(format!("'{text}' is not YYYYMMDD[HHMM[SS]][Z]")),
    };
    let naive = NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S")
        .map_err(|e| format!("'{text}' is not a valid time: {e}"))?;
    if utc {
        Ok(Utc.from_utc_datetime(&naive))
    } else {
        Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("'{text}' does not exist in the local time zone"))
    }
}

/// OpenSSH's pattern match: `*` any run, `?` one character.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A comma-separated pattern list with `!` negations, as OpenSSH's `match_pattern_list`.
fn principal_matches(list: &str, principal: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated, principal) {
                return false;
            }
        } else if wildcard(pattern, principal) {
            matched = true;
        }
    }
    matched
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read allowed_signers {}: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let mut signers = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("{}:{}: {why}", path.display(), index + 1);
            signers.push(Self::parse_line(line, index + 1).map_err(at)?);
        }
        Ok(Self {
            path: path.to_owned(),
            signers,
        })
    }

    fn parse_line(line: &str, number: usize) -> Result<Signer, String> {
        let fields = fields(line);
        let principals = fields
            .first()
            .ok_or("empty line")?
            .trim_matches('"')
            .to_owned();
        let mut rest = &fields[1..];
        let mut signer = Signer {
            line: number,
            principals,
            namespaces: None,
            valid_after: None,
            valid_before: None,
            key: KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([0; 32])),
        };
        if let Some(first) = rest.first()
            && !looks_like_key_type(first)
        {
            for option in options(first) {
                let (name, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
                match name.to_ascii_lowercase().as_str() {
                    "cert-authority" => {
                        return Err("cert-authority entries are not supported: glow-run verifies plain keys only; list each approver's public key".into());
                    }
                    "namespaces" => {
                        signer.namespaces =
                            Some(value.split(',').map(|n| n.trim().to_owned()).collect());
                    }
                    "valid-after" => signer.valid_after = Some(parse_time(value)?),
                    "valid-before" => signer.valid_before = Some(parse_time(value)?),
                    other => return Err(format!("unknown option '{other}'")),
                }
            }
            rest = &rest[1..];
        }
        let (Some(kind), Some(blob)) = (rest.first(), rest.get(1)) else {
            return Err("expected `principals [options] key-type base64-key [comment]`".into());
        };
        let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
            .map_err(|e| format!("invalid public key: {e}"))?;
        signer.key = key.key_data().clone();
        Ok(signer)
    }

    /// The literal principals (no patterns) that hold `key`.
    pub fn principals_for(&self, key: &KeyData) -> Vec<String> {
        self.signers
            .iter()
            .filter(|s| &s.key == key)
            .flat_map(|s| s.principals.split(','))
            .filter(|p| !p.contains(['*', '?', '!']))
            .map(str::to_owned)
            .collect()
    }

    /// `Ok(())` when `principal` may sign plans with `key` at `now`; else why not.
    pub fn permits(
        &self,
        principal: &str,
        key: &KeyData,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let candidates: Vec<&Signer> = self
            .signers
            .iter()
            .filter(|s| &s.key == key && principal_matches(&s.principals, principal))
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "the key {} is not in allowed_signers ({}) for {principal}",
                fingerprint(key),
                self.path.display()
            ));
        }
        let mut why = String::new();
        for signer in candidates {
            let place = format!("{} line {}", self.path.display(), signer.line);
            if let Some(namespaces) = &signer.namespaces
                && !namespaces.iter().any(|n| wildcard(n, NAMESPACE))
            {
                why = format!(
                    "{place} limits the key to namespaces=\"{}\", which does not include {NAMESPACE}",
                    namespaces.join(",")
                );
            } else if let Some(after) = signer.valid_after.filter(|after| now < *after) {
                why = format!("{place}: the key is valid only after {after} (valid-after)");
            } else if let Some(before) = signer.valid_before.filter(|before| now >= *before) {
                why = format!("{place}: the key expired at {before} (valid-before)");
            } else {
                return Ok(());
            }
        }
        Err(why)
    }
}

/// What an approval must satisfy: `[approvals]` policy, the allowed signers, the initiator.
pub struct Rules<'a> {
    pub roles: &'a BTreeMap<String, Vec<String>>,
    pub signers: Option<&'a AllowedSigners>,
    /// With `distinct_from_initiator`: who started the run.
    pub initiator: Option<&'a str>,
    /// For messages: the policy file.
    pub policy_file: String,
}

impl Rules<'_> {
    /// Whether `principal` is listed for `role` in `[approvals] roles`.
    pub fn listed(&self, role: &str, principal: &str) -> Result<(), String> {
        let Some(principals) = self.roles.get(role) else {
            return Err(format!(
                "no principal is listed for role '{role}' in [approvals] roles ({})",
                self.policy_file
            ));
        };
        if principals.iter().any(|p| p.eq_ignore_ascii_case(principal)) {
            Ok(())
        } else {
            Err(format!(
                "{principal} is not listed for role '{role}' in [approvals] roles = {principals:?} ({})",
                self.policy_file
            ))
        }
    }

    /// Checks one approval of the plan `plan_hash`; returns the key's fingerprint. The error
    /// names the check that failed.
    pub fn verify(
        &self,
        approval: &Approval,
        plan_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        self.listed(&approval.role, &approval.principal)?;
        let signature = parse_signature(&approval.signature)?;
        if signature.namespace() != NAMESPACE {
            return Err(format!(
                "the signature is in namespace '{}', not '{NAMESPACE}' (sign with -n {NAMESPACE})",
                signature.namespace()
            ));
        }
        let key = signature.public_key().clone();
        let fingerprint = fingerprint(&key);
        if approval.key != fingerprint {
            return Err(format!(
                "the approval names key {} but the signature was made by {fingerprint}",
                approval.key
            ));
        }
        PublicKey::new(key.clone(), "")
            .verify(NAMESPACE, plan_hash.as_bytes(), &signature)
            .map_err(|_| {
                format!(
                    "the signature does not verify over this plan's hash {plan_hash} (it signs something else: another plan, or this plan before it changed)"
                )
            })?;
        let Some(signers) = self.signers else {
            return Err(format!(
                "no [approvals] allowed_signers file in {} to check the key {fingerprint} against",
                self.policy_file
            ));
        };
        signers.permits(&approval.principal, &key, now)?;
        if let Some(initiator) = self.initiator
            && initiator
                .trim()
                .eq_ignore_ascii_case(approval.principal.trim())
        {
            return Err(format!(
                "{} started this run and [approvals] distinct_from_initiator = true ({}); another person must approve",
                approval.principal, self.policy_file
            ));
        }
        Ok(fingerprint)
    }
}

/// Fills `{NAME}` / `{NAME:default}` in a policy path from vars (as `[artifacts] root` does).
pub fn expand_path(template: &str, vars: &BTreeMap<String, String>) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("\"{template}\" has an unclosed '{{'"))?;
        let inner = &rest[open + 1..open + close];
        let (name, default) = match inner.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match vars.get(name).map(String::as_str).or(default) {
            Some(value) => out.push_str(value),
            None => {
                return Err(format!(
                    "\"{template}\" uses {{{name}}}, but no --var {name}=... was given"
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_patterns_follow_openssh() {
        assert!(principal_matches("alice@example.com", "alice@example.com"));
        assert!(principal_matches(
            "*@example.com,!eve@example.com",
            "bob@example.com"
        ));
        assert!(!principal_matches(
            "*@example.com,!eve@example.com",
            "eve@example.com"
        ));
        assert!(!principal_matches("a?c", "abbc"));
    }

    #[test]
    fn options_with_quoted_commas() {
        let text = "alice@example.com namespaces=\"git,glow-run-plan\",valid-before=20300101Z ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILBDNCg73c2jTJYapQcx81uJvZPLQsSeL2+0z2qwmUjs alice\n";
        let signers = AllowedSigners::parse(text, Path::new("allowed_signers")).unwrap();
        assert_eq!(signers.signers.len(), 1);
        assert_eq!(
            signers.signers[0].namespaces.as_deref(),
            Some(&["git".to_owned(), "glow-run-plan".to_owned()][..])
        );
        let error = AllowedSigners::parse("a cert-authority ssh-ed25519 AAAA\n", Path::new("s"))
            .unwrap_err();
        assert!(error.contains("cert-authority"), "{error}");
    }
}
