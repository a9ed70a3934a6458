//! Policy from `glow.toml` beside the script: which programs may run, whether a shell may,
//! which hosts HTTP may reach, whether SQL may write, where artifacts go, approval rules and
//! engine limits. A missing file means permissive defaults with engine limits on. An unknown
//! key is a configuration error (exit 2) naming it, so a misspelt rule never silently allows.

mod fs;

use crate::error::Error;
pub use fs::FsPolicy;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod allowed;
mod ranges;

pub const FILE_NAME: &str = "glow.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub exec: ExecPolicy,
    #[serde(default)]
    pub http: HttpPolicy,
    #[serde(default)]
    pub sql: SqlPolicy,
    #[serde(default)]
    pub fs: FsPolicy,
    #[serde(default)]
    pub artifacts: ArtifactsPolicy,
    #[serde(default)]
    pub approvals: ApprovalsPolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub evidence: EvidencePolicy,
    /// Where the policy was read from, if a file existed.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The real paths of the programs `[exec] allow` names, resolved on PATH at start.
    #[serde(skip)]
    pub allowed_programs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecPolicy {
    /// Programs scripts may run (by name or path); `None` allows any.
    pub allow: Option<Vec<String>>,
    /// Whether `exec::sh` may run a shell line.
    #[serde(default = "yes")]
    pub shell: bool,
}

impl Default for ExecPolicy {
    fn default() -> Self {
        Self {
            allow: None,
            shell: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPolicy {
    /// Hosts HTTP may reach; `None` allows any.
    pub allow_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlPolicy {
    #[serde(default = "yes")]
    pub allow_writes: bool,
}

impl Default for SqlPolicy {
    fn default() -> Self {
        Self { allow_writes: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsPolicy {
    /// Store root template: `{NAME}` takes `--var NAME=`, plus `{run_id}` and `{date}`.
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsPolicy {
    #[serde(default)]
    pub distinct_from_initiator: bool,
    /// OpenSSH allowed_signers file (path relative to the working directory; `{NAME}` /
    /// `{NAME:default}` take `--var NAME=`).
    pub allowed_signers: Option<String>,
    /// Principals who may approve each role: `security = ["alice@example.com"]`.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Live runs need `--plan`, and `prompt::approve` accepts only signatures.
    #[serde(default)]
    pub require_signatures: bool,
    /// How long `prompt::approve` waits for a signature to arrive in the shared state.
    #[serde(default, with = "humantime_serde_compat")]
    pub wait: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePolicy {
    /// OpenSSH ed25519 private key that signs bundles' attestations (`--sign` and
    /// `GLOW_SIGNING_KEY` come first); relative to the working directory.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "Limits::default_max_operations")]
    pub max_operations: u64,
    #[serde(default = "Limits::default_memory", with = "byte_size")]
    pub memory: u64,
    #[serde(
        default = "Limits::default_step_timeout",
        with = "humantime_serde_compat"
    )]
    pub step_timeout: Duration,
    #[serde(default = "Limits::default_call_levels")]
    pub call_levels: usize,
    #[serde(default = "Limits::default_expression_depth")]
    pub expression_depth: usize,
    #[serde(default = "Limits::default_variables")]
    pub variables: usize,
    #[serde(default = "Limits::default_modules")]
    pub modules: usize,
}

impl Limits {
    fn default_max_operations() -> u64 {
        100_000_000
    }
    fn default_memory() -> u64 {
        256 * 1024 * 1024
    }
    fn default_step_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn default_call_levels() -> usize {
        64
    }
    fn default_expression_depth() -> usize {
        64
    }
    fn default_variables() -> usize {
        10_000
    }
    fn default_modules() -> usize {
        64
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: Self::default_max_operations(),
            memory: Self::default_memory(),
            step_timeout: Self::default_step_timeout(),
            call_levels: Self::default_call_levels(),
            expression_depth: Self::default_expression_depth(),
            variables: Self::default_variables(),
            modules: Self::default_modules(),
        }
    }
}

fn yes() -> bool {
    true
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::options::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod byte_size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Size::deserialize(d)? {
            Size::Bytes(n) => Ok(n),
            Size::Text(text) => text
                .parse::<bytesize::ByteSize>()
                .map(|size| size.as_u64())
                .map_err(|e| serde::de::Error::custom(format!("invalid size \"{text}\": {e}"))),
        }
    }
}

/// What an effect asks policy about.
#[derive(Debug, Clone)]
pub enum Subject<'a> {
    /// A program as the script named it, and where it was found (`None`: not found).
    Program {
        name: &'a str,
        path: Option<&'a Path>,
    },
    Shell,
    Host(&'a str),
    SqlWrite,
    /// Refused by the namespace itself before it reached the gate (an SQL statement that a
    /// read-only session cannot prove is a read): the message names the rule.
    Refused(String),
    /// A file a read-only `fs` function looks at (`[fs] allow`).
    Path(&'a Path),
    None,
}

impl Policy {
    /// Reads `glow.toml` from `dir` when it exists.
    pub fn load_from_dir(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(FILE_NAME);
        // Only a regular file, bounded: a glow.toml linked to /dev/zero must not hang start-up.
        match crate::regular_file::read_to_string(&path, crate::regular_file::CONFIG_CAP) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Config {
                path,
                message: e.to_string(),
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        policy.source = Some(path.to_owned());
        policy.limits.validate().map_err(|message| Error::Config {
            path: path.to_owned(),
            message,
        })?;
        policy.allowed_programs = allowed::resolve(policy.exec.allow.as_deref().unwrap_or(&[]));
        Ok(policy)
    }

    pub fn file_label(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => FILE_NAME.to_owned(),
        }
    }

    /// `Err(message)` names the rule that refuses the subject.
    pub fn check(&self, subject: &Subject<'_>) -> Result<(), String> {
        match subject {
            Subject::Program { name, path } => {
                let Some(allow) = &self.exec.allow else {
                    return Ok(());
                };
                allowed::check(allow, &self.allowed_programs, name, *path).map_err(|why| {
                    format!(
                        "policy refuses to run '{name}': {why} [exec] allow = {allow:?} ({})",
                        self.file_label()
                    )
                })
            }
            Subject::Shell => {
                if self.exec.shell {
                    Ok(())
                } else {
                    Err(format!(
                        "policy refuses exec::sh: [exec] shell = false ({})",
                        self.file_label()
                    ))
                }
            }
            Subject::Host(host) => {
                let Some(allow) = &self.http.allow_hosts else {
                    return Ok(());
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if allow
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(host))
                {
                    Ok(())
                } else {
                    Err(format!(
                        "policy refuses host '{host}': it is not in [http] allow_hosts = {:?} ({})",
                        allow,
                        self.file_label()
                    ))
                }
            }
            Subject::SqlWrite => {
                if self.sql.allow_writes {
                    Ok(())
                } else {
                    Err(format!(
                        "policy refuses SQL writes: [sql] allow_writes = false ({})",
                        self.file_label()
                    ))
                }
            }
            Subject::Refused(rule) => Err(rule.clone()),
            Subject::Path(path) => self.fs.check(path, &self.file_label()),
            Subject::None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Policy::parse("[exec]\nallowed = []\n", Path::new("glow.toml")).unwrap_err();
        assert!(err.render().contains("allowed"), "{}", err.render());
    }

    #[test]
    fn limits_accept_human_sizes() {
        let policy = Policy::parse(
            "[limits]\nmemory = \"64MiB\"\nstep_timeout = \"5m\"\n",
            Path::new("g"),
        )
        .unwrap();
        assert_eq!(policy.limits.memory, 64 * 1024 * 1024);
        assert_eq!(policy.limits.step_timeout, Duration::from_secs(300));
    }
}
