//! `codedeploy-agent validate`: check an appspec, bundle directory or archive and print every
//! problem compiler-style.

use std::process::ExitCode;

use crate::cli::ValidateArgs;

/// Runs `validate` and returns its exit code: 0 valid, 1 problems found, 2 usage error.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let _ = args;
    eprintln!("validate: not yet available in this build");
    ExitCode::from(2)
}
