//! The daemon: poll loop, backoff and the throttle gate, in-flight tracking, crash recovery,
//! graceful shutdown.

pub mod agent;
pub mod backoff;
pub mod notify;
pub mod start;
pub mod status;
pub mod tracking;

pub use agent::{Agent, DaemonOptions, Engine, Shutdown};
