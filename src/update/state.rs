//! The switch to a new binary and its health check, on disk: `<pid_dir>/<program>.update.json`
//! says which update is pending, confirmed or rolled back, and is changed only under the flock
//! of `<pid_dir>/<program>.update.lock`.
//!
//! ```text
//! pending --the new binary reaches its first poll (its SHA-256 is the staged one)--> confirmed
//! pending --update_health_timeout_seconds pass first (the watcher)--> rolled_back
//! ```
//!
//! Whoever makes the transition records the host command's result in the tracking directory
//! (`UpdateDeploymentAgent`, [`super::TRACKING_ID`]); the agent that runs afterwards reports it
//! through its recovery, once. The watcher is `codedeploy-agent update-watch` started from the
//! old binary (`<binary>.prev`) before the switch: on a timeout it restores the old binary and
//! restarts it (`systemctl restart --no-block <unit>` under systemd; otherwise it stops the hung
//! process and `exec`s the old binary's `run` itself).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::TRACKING_ID;
use crate::daemon::command_state::{OwedResult, Tracker};
use crate::deploy::executor::CommandFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Confirmed,
    RolledBack,
}

/// How the new binary is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// `systemctl restart --no-block <unit>`.
    Systemd { unit: String },
    /// `exec` of the binary with these arguments (after argv[0]), in process `pid`.
    Exec { pid: i32, args: Vec<OsString> },
    /// Nothing is restarted (`codedeploy-agent update` with no daemon running).
    None,
}

/// `<program>.update.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    pub phase: Phase,
    pub from: String,
    pub to: String,
    /// SHA-256 of the new binary.
    pub sha256: String,
    pub binary: PathBuf,
    pub restart: Restart,
    /// The `UpdateDeploymentAgent` command whose result is owed, if any.
    pub host_command_id: Option<String>,
    pub tracking_dir: PathBuf,
    /// Seconds since the epoch by which the new binary must have confirmed.
    pub deadline: u64,
    /// What happened, in words (for `codedeploy-agent update` and the log).
    pub message: String,
}

pub fn state_path(pid_dir: &Path, program: &str) -> PathBuf {
    pid_dir.join(format!("{program}.update.json"))
}

fn lock_path(state: &Path) -> PathBuf {
    state.with_extension("lock")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Holds the state lock while alive.
struct Locked(#[expect(dead_code, reason = "held for its flock")] File);

fn lock(state: &Path) -> std::io::Result<Locked> {
    if let Some(dir) = state.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(state))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Locked(file))
}

pub fn read(state: &Path) -> Option<UpdateState> {
    fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn write(state: &Path, s: &UpdateState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    crate::deploy::layout::write_atomic(state, &json)
}

/// Records a pending switch (before the binary is swapped).
pub fn begin(state: &Path, s: &UpdateState) -> std::io::Result<()> {
    let _lock = lock(state)?;
    write(state, s)
}

fn record(s: &UpdateState, owed: &OwedResult) {
    if let Some(hc) = &s.host_command_id
        && let Err(e) = Tracker::new(&s.tracking_dir).finish(TRACKING_ID, hc, owed)
    {
        tracing::error!(error = %e, "cannot record the result of {}", super::COMMAND_NAME);
    }
}

/// The payload of a successful update command.
pub fn success(message: &str) -> OwedResult {
    OwedResult {
        status: crate::control::status::SUCCEEDED.into(),
        payload: serde_json::json!({
            "error_code": 0, "script_name": "", "message": format!("Succeeded: {message}"), "log": ""
        })
        .to_string(),
    }
}

pub fn failure(message: &str) -> OwedResult {
    OwedResult {
        status: crate::control::status::FAILED.into(),
        payload: CommandFailure::unknown(message).payload_json(),
    }
}

/// At start of `run`, before the first poll: when an update to this very binary is pending,
/// it is confirmed (healthy) and its result recorded for the recovery to report.
pub fn confirm_at_start(state: &Path) {
    let Some(pending) = read(state).filter(|s| s.phase == Phase::Pending) else {
        return;
    };
    let me = std::env::current_exe()
        .and_then(|exe| super::source::sha256_file(&exe))
        .unwrap_or_default();
    let Ok(_lock) = lock(state) else { return };
    let Some(mut s) = read(state).filter(|s| s.phase == Phase::Pending) else {
        return;
    };
    if me != s.sha256 {
        tracing::warn!(
            to = %pending.to,
            "an update is pending, but this is not the new binary; the watcher decides"
        );
        return;
    }
    s.phase = Phase::Confirmed;
    s.message = format!("updated the agent from {} to {}", s.from, s.to);
    record(&s, &success(&s.message));
    if let Err(e) = write(state, &s) {
        tracing::error!(error = %e, "cannot record the confirmed update");
    }
    tracing::info!(from = %s.from, to = %s.to, "{}: the new version is up", s.message);
}

/// `codedeploy-agent update-watch --state FILE`: detaches (fork; the parent returns at once),
/// then waits for the pending update to be confirmed, and rolls it back at its deadline.
pub fn watch_command(state: &Path) -> std::process::ExitCode {
    // SAFETY: called from the sync `main` before any thread exists.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return std::process::ExitCode::SUCCESS,
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
        }
        Err(e) => {
            crate::errln!("update-watch: cannot fork: {e}");
            return std::process::ExitCode::from(1);
        }
    }
    if let Some(Restart::Systemd { unit }) = read(state).map(|s| s.restart) {
        systemctl_restart(&unit);
    }
    loop {
        let Some(s) = read(state) else {
            crate::errln!(
                "update-watch: {} is gone; nothing to watch",
                state.display()
            );
            return std::process::ExitCode::from(1);
        };
        if s.phase != Phase::Pending {
            crate::errln!("update-watch: {:?}: {}", s.phase, s.message);
            return std::process::ExitCode::SUCCESS;
        }
        if now() >= s.deadline {
            return roll_back(state);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn systemctl_restart(unit: &str) {
    match std::process::Command::new("systemctl")
        .args(["restart", "--no-block", unit])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => crate::errln!("update-watch: systemctl restart {unit}: {s}"),
        Err(e) => crate::errln!("update-watch: cannot run systemctl: {e}"),
    }
}

fn roll_back(state: &Path) -> std::process::ExitCode {
    let Ok(lock) = lock(state) else {
        return std::process::ExitCode::from(1);
    };
    let Some(mut s) = read(state).filter(|s| s.phase == Phase::Pending) else {
        return std::process::ExitCode::SUCCESS;
    };
    let restored = super::install::restore(&s.binary);
    s.phase = Phase::RolledBack;
    s.message = match &restored {
        Ok(()) => format!(
            "the new version {} did not reach its first poll within the health timeout; rolled \
             back to {} ({})",
            s.to,
            s.from,
            s.binary.display()
        ),
        Err(e) => format!(
            "the new version {} did not reach its first poll within the health timeout, and \
             {} could not be restored: {e}",
            s.to,
            super::install::prev_path(&s.binary).display()
        ),
    };
    crate::errln!("update-watch: {}", s.message);
    record(&s, &failure(&s.message));
    let _ = write(state, &s);
    drop(lock);
    match &s.restart {
        Restart::Systemd { unit } => systemctl_restart(unit),
        Restart::Exec { pid, args } => {
            let pid = nix::unistd::Pid::from_raw(*pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            exec_when_unlocked(state, &s, args);
        }
        Restart::None => {}
    }
    std::process::ExitCode::SUCCESS
}

/// Waits (up to 30 s) until nothing holds the daemon's pid lock, then becomes the old
/// binary's `run`.
fn exec_when_unlocked(state: &Path, s: &UpdateState, args: &[OsString]) {
    let pid_lock = pid_lock_beside(state);
    for _ in 0..300 {
        let free = pid_lock.as_deref().is_none_or(|p| {
            File::open(p).is_ok_and(|f| {
                // SAFETY: flock on a descriptor we own; dropping it releases the lock.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
            })
        });
        if free {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = exec(&s.binary, args);
    crate::errln!("update-watch: cannot start {}: {e}", s.binary.display());
}

/// The daemon's `<program>.pid.lock`, beside `<program>.update.json` in `pid_dir`.
fn pid_lock_beside(state: &Path) -> Option<PathBuf> {
    let program = state.file_name()?.to_str()?.strip_suffix(".update.json")?;
    Some(state.with_file_name(format!("{program}.pid.lock")))
}

/// Replaces this process with `binary args…`; returns only on failure.
pub fn exec(binary: &Path, args: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(binary).args(args).exec()
}
