//! Command-line definitions. `codedeploy-agent <command>`; when the binary is invoked as
//! `codedeploy-local` (argv[0], e.g. through the packaged symlink) it behaves as
//! `codedeploy-agent local`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// A drop-in replacement for the AWS CodeDeploy host agent.
#[derive(Debug, Parser)]
#[command(name = "codedeploy-agent", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an appspec, a bundle directory or a bundle archive without deploying it.
    Validate(ValidateArgs),
    /// Run a whole deployment on this machine (same as invoking the binary as codedeploy-local).
    Local(LocalArgs),
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A bundle directory, a bundle archive (zip, tar, tgz) or an appspec file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// The operating system the appspec targets.
    #[arg(long, value_enum, default_value_t = TargetOs::Linux)]
    pub os: TargetOs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetOs {
    Linux,
    Windows,
}

impl From<TargetOs> for crate::appspec::Os {
    fn from(os: TargetOs) -> Self {
        match os {
            TargetOs::Linux => crate::appspec::Os::Linux,
            TargetOs::Windows => crate::appspec::Os::Windows,
        }
    }
}

/// Options of `codedeploy-local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Everything after `local`; the options arrive with the local-deployment work.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<OsString>,
}

/// True when the program was invoked under the name `codedeploy-local`.
pub fn invoked_as_local(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == "codedeploy-local")
}

/// Parses the process arguments, applying the argv[0] dispatch.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut args = args;
    if args.first().is_some_and(invoked_as_local) {
        args.insert(1, OsString::from("local"));
        args[0] = OsString::from("codedeploy-agent");
    }
    Cli::try_parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_codedeploy_local_dispatches_to_local() {
        let cli = parse(vec!["/opt/codedeploy-agent/bin/codedeploy-local".into()]).expect("parses");
        assert!(matches!(cli.command, Command::Local(_)));
    }

    #[test]
    fn validate_defaults_to_current_directory() {
        let cli = parse(vec!["codedeploy-agent".into(), "validate".into()]).expect("parses");
        let Command::Validate(args) = cli.command else {
            panic!("expected validate");
        };
        assert_eq!(args.path, PathBuf::from("."));
        assert_eq!(args.format, OutputFormat::Text);
        assert_eq!(args.os, TargetOs::Linux);
    }
}
