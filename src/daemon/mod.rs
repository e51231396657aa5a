//! The daemon: poll loop, backoff and the throttle gate, in-flight tracking, crash recovery,
//! graceful shutdown.

pub mod agent;
pub mod backoff;
pub mod command_state;
pub mod notify;
pub mod start;
pub mod status;
pub mod update;

pub use agent::{Agent, DaemonOptions, Engine, Shutdown};

/// The old name of [`command_state`].
pub use command_state as tracking;
