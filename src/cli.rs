//! The command line's edge: parse the arguments, dispatch to a subcommand or a run, and render
//! the error once, through the redactor, as the exit code's companion on stderr. Nothing below
//! this file imports it: runs, watch mode and the subcommands are called from here.

mod approve;
mod bundle;
mod check;
mod defs;
mod lookup;
mod plan;
mod resume;
mod runs;
mod show;
mod unlock;
mod verify;

use crate::arguments::{Arguments, Command};
use crate::config::RunSettings;
use crate::error::{EXIT_OK, Error};
use crate::redact::Redactor;
use clap::Parser;
use std::ffi::OsString;
use std::io::Write;
use std::sync::Arc;

/// The entry point of the binary: returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    crate::alloc::tune_malloc();
    let args: Vec<OsString> = args.into_iter().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::host::exec::reaper::ARG)
    {
        return crate::host::exec::reaper::serve();
    }
    init_tracing();
    crate::redact::install_panic_hook();
    let arguments = match Arguments::try_parse_from(args) {
        Ok(arguments) => arguments,
        Err(error) => {
            let code = if error.use_stderr() {
                crate::error::EXIT_USAGE
            } else {
                EXIT_OK
            };
            let _ = error.print();
            return code;
        }
    };
    let redactor = Arc::new(Redactor::new());
    match dispatch(arguments, &redactor) {
        Ok(code) => code,
        Err(error) => {
            let text = error.render();
            let _ = std::io::stderr().write_all(redactor.redact(&text).as_bytes());
            error.code()
        }
    }
}

fn init_tracing() {
    if let Ok(filter) = std::env::var("GLOW_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn dispatch(arguments: Arguments, redactor: &Arc<Redactor>) -> Result<i32, Error> {
    match arguments.command {
        Some(Command::Check { scripts, stdlib }) => check::check(&scripts, stdlib),
        Some(Command::Runs { limit }) => runs::runs(&arguments.global, limit),
        Some(Command::Show { run_id }) => show::show(&arguments.global, &run_id),
        Some(Command::Resume {
            run_id,
            force,
            rerun_in_doubt,
            run,
        }) => resume::resume(
            &arguments.global,
            &run_id,
            (force, rerun_in_doubt),
            run,
            redactor,
        ),
        Some(Command::Bundle {
            run_id,
            output,
            sign,
        }) => bundle::bundle(&arguments.global, &run_id, &output, sign),
        Some(Command::Unlock {
            script,
            environment,
            reason,
            yes,
        }) => unlock::unlock(&arguments.global, &script, &environment, &reason, yes),
        Some(Command::Verify {
            path,
            allowed_signers,
        }) => verify::verify(&arguments.global, &path, allowed_signers.as_deref()),
        Some(Command::Defs { out }) => defs::defs(out.as_deref()),
        Some(Command::Plan { action }) => plan::plan(&arguments.global, action),
        Some(Command::Approve(args)) => approve::approve(&arguments.global, &args),
        None => {
            let settings = RunSettings::load(
                arguments.script.as_deref(),
                arguments.eval.as_deref(),
                arguments.run.clone(),
                &arguments.global,
            )?;
            if settings.flags.watch {
                return crate::watcher::watch(settings);
            }
            crate::run::execute(settings, redactor)
        }
    }
}
