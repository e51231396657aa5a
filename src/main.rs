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
        Command::Local(args) => codedeploy_agent::local::run(&args),
        Command::Plan(args) => codedeploy_agent::preview::run(&args),
        Command::Run(args) => codedeploy_agent::daemon::start::run(&args),
        Command::Status(args) => codedeploy_agent::daemon::status::command(&args),
        Command::PrepareImage(args) => codedeploy_agent::prepare::command(&args),
        Command::Deploy(args) => codedeploy_agent::push::run(&args),
        Command::Update(args) => codedeploy_agent::update::command::run(&args),
        Command::UpdateWatch(args) => codedeploy_agent::update::state::watch_command(&args.state),
    }
}
