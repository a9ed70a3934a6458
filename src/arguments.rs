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

    /// Export the run as an OpenTelemetry trace to this OTLP/HTTP endpoint (as
    /// OTEL_EXPORTER_OTLP_ENDPOINT; `/v1/traces` is appended).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,

    /// Use this directory instead of the embedded standard library (while editing it).
    #[arg(long, value_name = "DIR", env = "GLOW_STDLIB")]
    pub stdlib: Option<PathBuf>,

    /// With --state: wait up to DURATION ("30s", "10m") in line for the release lock instead of
    /// failing when another live run holds it.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait_lock: Option<std::time::Duration>,

    /// With --dry-run: save the plan (for approvers to sign and --plan to apply).
    #[arg(long, value_name = "FILE")]
    pub plan_out: Option<PathBuf>,

    /// Live run bound to a saved plan (a file, or its hash with --state): refuses a stale plan
    /// and any effect the plan does not list.
    #[arg(long, value_name = "FILE|HASH", conflicts_with_all = ["dry_run", "watch", "plan_out"])]
    pub plan: Option<String>,
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
        /// Run again the steps that started in RUN_ID and never ended (in doubt) when they
        /// have no `verify` closure, instead of refusing.
        #[arg(long)]
        rerun_in_doubt: bool,
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
    /// End a stuck release lock (with --state): shows the holder, asks (or --yes), ends its
    /// database session and records who and why in the shared history.
    Unlock {
        #[arg(value_name = "SCRIPT")]
        script: String,
        /// The environment of the lock (`--var env=` of the holder).
        #[arg(long = "env", value_name = "NAME", default_value = "default")]
        environment: String,
        /// Why the lock is ended (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Saved plans: `plan show FILE|HASH`.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Sign a saved plan as ROLE with an SSH key (or attach a signature made elsewhere).
    Approve(ApproveArgs),
    /// Write Rhai definition files (.d.rhai) for editors.
    Defs {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[arg(value_name = "FILE|HASH")]
    pub plan: String,
    #[arg(long)]
    pub role: String,
    /// Private key (default: GLOW_SIGNING_KEY, else ~/.ssh/id_ed25519); a .pub uses ssh-agent.
    #[arg(long, value_name = "PATH", conflicts_with = "signature")]
    pub key: Option<PathBuf>,
    /// Who signs (default: the principal allowed_signers lists for the key and role).
    #[arg(long, value_name = "NAME")]
    pub principal: Option<String>,
    /// An armored SSH signature made elsewhere (`ssh-keygen -Y sign`), or @FILE.
    #[arg(long, value_name = "SIG", requires = "principal")]
    pub signature: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PlanAction {
    /// What a saved plan will do, its hash, its approvals and whether each verifies.
    Show {
        #[arg(value_name = "FILE|HASH")]
        plan: String,
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
