//! The validated settings of one run, built from the command line, the script file, `glow.toml`
//! and `--env-file`. Everything that can be wrong before the script runs is found here (exit 2).

use crate::arguments::{GlobalFlags, RunFlags};
use crate::error::Error;
use crate::policy::Policy;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::DryRun => "dry-run",
        }
    }
}

/// The name under which a `-e` snippet appears in errors and the run index.
pub const SNIPPET_NAME: &str = "<snippet>";

#[derive(Debug, Clone)]
pub struct RunSettings {
    /// How the script is named in errors and the journal (the path as given, or `<snippet>`).
    pub source_name: String,
    pub script_path: Option<PathBuf>,
    /// Imports resolve inside this tree; `glow.toml` is read from here.
    pub script_dir: PathBuf,
    pub text: String,
    pub sha256: String,
    pub vars: BTreeMap<String, String>,
    /// Variables from `--env-file`, layered over the process environment.
    pub env_overlay: BTreeMap<String, String>,
    pub mode: Mode,
    pub flags: RunFlags,
    pub policy: Arc<Policy>,
    pub state_dir: PathBuf,
    pub state_url: Option<String>,
    /// Set by `glow-run resume`: the run resumed, and the steps (name, occurrence) it finished.
    pub resume: Option<Resume>,
    /// Answers for prompts from `--answers FILE`, keyed by prompt id.
    pub answers: Arc<crate::host::prompt::Answers>,
}

#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub run_id: String,
    pub succeeded: BTreeSet<(String, usize)>,
    /// Steps that started in that run and never ended (see `host/step/in_doubt.rs`).
    pub in_doubt: Vec<crate::state::InDoubtStep>,
    /// `--rerun-in-doubt`: run them again without asking.
    pub rerun_in_doubt: bool,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl RunSettings {
    pub fn load(
        script: Option<&Path>,
        snippet: Option<&str>,
        flags: RunFlags,
        global: &GlobalFlags,
    ) -> Result<Self, Error> {
        let (source_name, script_path, script_dir, text) = match (script, snippet) {
            (_, Some(snippet)) => {
                let cwd =
                    std::env::current_dir().map_err(|e| Error::host("current directory", e))?;
                (SNIPPET_NAME.to_owned(), None, cwd, snippet.to_owned())
            }
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|io_error| Error::ScriptRead {
                    path: path.to_owned(),
                    io_error,
                })?;
                let absolute =
                    std::path::absolute(path).map_err(|e| Error::host("script path", e))?;
                let dir = absolute
                    .parent()
                    .map(Path::to_owned)
                    .unwrap_or_else(|| PathBuf::from("/"));
                (path.display().to_string(), Some(path.to_owned()), dir, text)
            }
            (None, None) => return Err(Error::usage("give a SCRIPT or -e SNIPPET")),
        };
        let policy = Arc::new(Policy::load_from_dir(&script_dir)?);
        let env_overlay = match &flags.env_file {
            Some(path) => read_env_file(path)?,
            None => BTreeMap::new(),
        };
        let answers = match &flags.answers {
            Some(path) => crate::host::prompt::Answers::load(path)?,
            None => crate::host::prompt::Answers::default(),
        };
        let mode = if flags.dry_run || (flags.watch && !flags.live) {
            Mode::DryRun
        } else {
            Mode::Live
        };
        Ok(Self {
            sha256: sha256_hex(text.as_bytes()),
            source_name,
            script_path,
            script_dir,
            text,
            vars: flags.vars.iter().cloned().collect(),
            env_overlay,
            mode,
            flags,
            policy,
            state_dir: global.state_dir.clone(),
            state_url: global.state.clone(),
            resume: None,
            answers: Arc::new(answers),
        })
    }

    /// Re-reads the script file (watch mode) keeping every other setting.
    pub fn reload_text(&mut self) -> Result<(), Error> {
        if let Some(path) = &self.script_path {
            self.text = std::fs::read_to_string(path).map_err(|io_error| Error::ScriptRead {
                path: path.to_owned(),
                io_error,
            })?;
            self.sha256 = sha256_hex(self.text.as_bytes());
        }
        Ok(())
    }
}

pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut vars = BTreeMap::new();
    for item in iter {
        let (key, value) = item.map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        vars.insert(key, value);
    }
    Ok(vars)
}
