//! Command-line definitions. `codedeploy-agent <command>`; when the binary is invoked as
//! `codedeploy-local` (argv[0], e.g. through the packaged symlink) it behaves as
//! `codedeploy-agent local`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// A drop-in replacement for the AWS CodeDeploy host agent.
#[derive(Debug, Parser)]
#[command(
    name = "codedeploy-agent",
    version = crate::VERSION,
    about,
    long_about = None,
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version (`-v` as AWS's v2 agent spells it, `-V` as well).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an appspec, a bundle directory or a bundle archive without deploying it.
    Validate(ValidateArgs),
    /// Run a whole deployment on this machine (same as invoking the binary as codedeploy-local).
    #[command(visible_alias = "deploy-local")]
    Local(LocalArgs),
    /// Show what a local deployment would do, without changing anything.
    Plan(LocalArgs),
    /// Run the agent in the foreground: poll CodeDeploy and run the commands it hands out.
    Run(crate::daemon::start::RunArgs),
    /// Is the daemon running, is it healthy, what is it doing (LSB exit codes).
    Status(crate::daemon::status::StatusArgs),
    /// Remove instance-specific agent state before an image (AMI) is taken.
    PrepareImage(crate::prepare::PrepareArgs),
    /// Push a revision to S3, create a CodeDeploy deployment and follow it until it ends.
    Deploy(crate::push::DeployArgs),
    /// Install the agent version update_policy asks for from update_source (the daemon does
    /// this itself for CodeDeploy's UpdateDeploymentAgent command).
    Update(crate::update::command::UpdateArgs),
    /// The self-update's health watcher (started by the agent itself).
    #[command(hide = true)]
    UpdateWatch(UpdateWatchArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpdateWatchArgs {
    /// The update state file.
    #[arg(long)]
    pub state: PathBuf,
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
    /// Comma-separated custom lifecycle events the deployment names, as for
    /// `codedeploy-local --events`; hooks for any other non-default event are an error, as at
    /// Install.
    #[arg(short = 'e', long = "events", value_name = "VALUE")]
    pub events: Option<String>,
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

/// Options of `codedeploy-local` (agent-behaviour.md §7), same names and defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// The bundle: a directory, a tgz/tar/zip file, s3://bucket/key[?versionId=..&etag=..] or
    /// a GitHub URL. Default: the current directory.
    #[arg(short = 'l', long = "bundle-location", value_name = "VALUE")]
    pub bundle_location: Option<String>,
    /// tgz, tar, zip or directory.
    #[arg(
        short = 't',
        long = "type",
        value_name = "VALUE",
        default_value = "directory"
    )]
    pub bundle_type: String,
    /// DISALLOW, OVERWRITE or RETAIN, for files that exist but were not installed by the
    /// previous deployment of this group. The appspec's file_exists_behavior wins.
    #[arg(
        short = 'b',
        long = "file-exists-behavior",
        value_name = "VALUE",
        default_value = "DISALLOW"
    )]
    pub file_exists_behavior: String,
    /// The deployment group id: the directory under the deployment root.
    #[arg(
        short = 'g',
        long = "deployment-group",
        value_name = "VALUE",
        default_value = "default-local-deployment-group"
    )]
    pub deployment_group: String,
    /// DEPLOYMENT_GROUP_NAME for the hooks.
    #[arg(
        short = 'd',
        long = "deployment-group-name",
        value_name = "VALUE",
        default_value = "LocalFleet"
    )]
    pub deployment_group_name: String,
    /// APPLICATION_NAME for the hooks. Default: the bundle location.
    #[arg(short = 'a', long = "application-name", value_name = "VALUE")]
    pub application_name: Option<String>,
    /// Comma-separated lifecycle events to run (default: all eleven, in order).
    #[arg(short = 'e', long = "events", value_name = "VALUE")]
    pub events: Option<String>,
    /// The agent configuration file. Default: /etc/codedeploy-agent/conf/codedeployagent.yml
    /// when it exists, otherwise built-in defaults with a per-user deployment root.
    #[arg(short = 'c', long = "agent-configuration-file", value_name = "VALUE")]
    pub agent_configuration_file: Option<PathBuf>,
    /// The appspec file name inside the bundle (default appspec.yml).
    #[arg(short = 'A', long = "appspec-filename", value_name = "VALUE")]
    pub appspec_filename: Option<String>,
    /// A GitHub token for a private repository (GitHub locations only). Default: the
    /// CODEDEPLOY_GITHUB_TOKEN environment variable, which, unlike this option, other users
    /// cannot see in the process list.
    #[arg(long = "github-token", value_name = "TOKEN")]
    pub github_token: Option<String>,
    /// Print the version and exit (codedeploy-local's -v).
    #[arg(short = 'v', long = "version")]
    pub version: bool,
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
    hoist_global_config(&mut args);
    Cli::try_parse_from(args)
}

/// The AWS agents' global form `codedeploy-agent --config_file FILE <command>` (v2 spells it
/// `--config-file`): moved after the command, as `-c FILE`, which every command that reads
/// the agent configuration takes.
fn hoist_global_config(args: &mut Vec<OsString>) {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return;
    };
    let (value, taken) = match first.split_once('=') {
        Some(("--config_file" | "--config-file", value)) => (OsString::from(value), 2),
        None if matches!(first, "--config_file" | "--config-file") && args.len() > 2 => {
            (args[2].clone(), 3)
        }
        _ => return,
    };
    if args.len() <= taken {
        return;
    }
    let rest = args.split_off(taken);
    args.truncate(1);
    let mut rest = rest.into_iter();
    if let Some(command) = rest.next() {
        args.push(command);
    }
    args.push(OsString::from("-c"));
    args.push(value);
    args.extend(rest);
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
