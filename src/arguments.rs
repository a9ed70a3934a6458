//! The command line (clap derive). Flags are grouped by concern; each can also come from a
//! `GLOW_*` environment variable where that makes sense for CI.

use crate::reporter::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "glow-run",
    version,
    about = "Runs release and rollback runbooks written in Rhai: audited effects, dry runs, a journal",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Arguments {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The runbook script to run.
    #[arg(value_name = "SCRIPT", required_unless_present = "eval")]
    pub script: Option<PathBuf>,

    /// Run an ad-hoc snippet instead of a script file.
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "SNIPPET",
        conflicts_with = "script"
    )]
    pub eval: Option<String>,

    #[command(flatten)]
    pub run: RunFlags,

    #[command(flatten)]
    pub global: GlobalFlags,
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Run options")]
pub struct RunFlags {
    /// Set a script variable (read with vars::get); repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Read environment variables from a dotenv file (they override the process environment).
    #[arg(long, value_name = "FILE", env = "GLOW_ENV_FILE")]
    pub env_file: Option<PathBuf>,

    /// Perform reads only; plan every other effect and print the plan.
    #[arg(long, env = "GLOW_DRY_RUN")]
    pub dry_run: bool,

    /// Re-run whenever the script or a module it imports changes (implies --dry-run unless --live).
    #[arg(long)]
    pub watch: bool,

    /// With --watch: perform effects for real (asks for confirmation once).
    #[arg(long, requires = "watch")]
    pub live: bool,

    /// Debounce window for --watch in milliseconds: editors write a file in several steps.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub debounce: u64,

    /// Answer every confirm with yes (never an approval).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Answers for prompts, keyed by prompt id (TOML or JSON).
    #[arg(long, value_name = "FILE", env = "GLOW_ANSWERS")]
    pub answers: Option<PathBuf>,

    /// Skip top-level steps before STEP.
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,

    /// Run only the top-level step STEP.
    #[arg(long, value_name = "STEP", conflicts_with = "from")]
    pub only: Option<String>,

    /// Output format: human lines on stderr, or JSON events on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human, env = "GLOW_FORMAT")]
    pub format: Format,

    /// Use this directory instead of the embedded standard library (while editing it).
    #[arg(long, value_name = "DIR", env = "GLOW_STDLIB")]
    pub stdlib: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "State")]
pub struct GlobalFlags {
    /// Where journals, the run index and the default artifact store live.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "GLOW_STATE_DIR",
        default_value = ".glow"
    )]
    pub state_dir: PathBuf,

    /// A shared PostgreSQL for the run index and the release lock (postgres://...).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "GLOW_STATE",
        hide_env_values = true
    )]
    pub state: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile and lint scripts without running anything.
    Check {
        #[arg(required = true, value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
        /// Use this directory instead of the embedded standard library.
        #[arg(long, value_name = "DIR", env = "GLOW_STDLIB")]
        stdlib: Option<PathBuf>,
    },
    /// Recent runs: id, script, mode, outcome, duration.
    Runs {
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A run's steps, effects, artifacts and approvals.
    Show { run_id: String },
    /// Run a script again, skipping the steps that succeeded in RUN_ID.
    Resume {
        run_id: String,
        /// Resume even though the script changed since that run.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Write an evidence bundle: journal, report, manifest, artifacts and an attestation.
    Bundle {
        run_id: String,
        #[arg(short = 'o', long = "output", value_name = "FILE.tar.gz")]
        output: PathBuf,
        /// Sign the attestation with this OpenSSH ed25519 private key (else `[evidence]
        /// signing_key` in glow.toml; else unsigned).
        #[arg(long, value_name = "KEY", env = "GLOW_SIGNING_KEY")]
        sign: Option<PathBuf>,
    },
    /// Re-check a bundle, run folder, run id or artifact store: journal chain, artifacts,
    /// manifest, attestation.
    Verify {
        #[arg(value_name = "RUN_DIR|BUNDLE|STORE|RUN_ID")]
        path: String,
        /// Trust attestation signatures by these keys (OpenSSH allowed_signers format).
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
    },
    /// Write Rhai definition files (.d.rhai) for editors.
    Defs {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}
