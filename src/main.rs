//! Entry point: parse the command line, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use codedeploy_agent::cli::{self, Command};

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match cli.command {
        Command::Validate(args) => codedeploy_agent::validate::run(&args),
        Command::Local(_) | Command::Plan(_) => {
            eprintln!("ERROR: codedeploy-local is not yet available in this build");
            ExitCode::from(1)
        }
    }
}
