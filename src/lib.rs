//! `codedeploy-agent`: a drop-in replacement for the AWS CodeDeploy host agent.
//!
//! The binary (`src/main.rs`) is thin; everything lives in these modules. See
//! `ARCHITECTURE.md` for the map.

pub mod appspec;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod hardening;
pub mod local;
pub mod logging;
pub mod output;
pub mod prepare;
pub mod preview;
pub mod push;
pub mod revision;
pub mod spec;
pub mod test_pause;
pub mod update;
pub mod validate;

/// The agent's version, as printed by `--version` and sent to the service.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
