//! Running one lifecycle event's hook scripts (agent-behaviour.md §5.7, §5.8).
//!
//! [`run_event`] runs the event's scripts in order, each in its own process group with stdin
//! from `/dev/null`, logs every entry to `<deployment dir>/logs/scripts.log` (and the
//! deployments log), enforces the timeout (TERM the group, then KILL after a grace period) and
//! stops at the first failing script with the [`ScriptError`] AWS would report, word for word.
//!
//! By default a script's stdout and stderr go to files,
//! `<deployment dir>/logs/hooks/<NN>-<event>-<script file name>.stdout` and `.stderr` (`NN` is
//! the script's 1-based position in the event; files are appended to on a rerun), that are
//! tailed into scripts.log while it runs. A daemon started by the script (`app &`) holding them
//! open therefore neither delays nor fails the event, and its later output lands in those
//! files. [`HookOptions::wait_for_inherited_output`] restores the AWS pipes and its "failed to
//! close STDOUT" error.
//!
//! Lines longer than 16 KiB are logged in 16 KiB pieces (each ending with a newline) and ANSI
//! escape sequences are stripped, so scripts.log stays one entry per line and memory stays
//! bounded whatever a script prints; the output files keep the raw bytes.
//!
//! The engine is synchronous; the daemon calls it from `spawn_blocking`.

mod scripts_log;
pub(crate) use scripts_log::{local_timestamp, strip_ansi};
mod supervise;
mod tail;
mod user;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{AccessFlags, access};
use serde::Serialize;

use crate::appspec::model::Script;
use scripts_log::EventLog;
use supervise::{Capture, Outcome, OutputFile};
use user::RunAsUser;

/// The `error_code` of a script failure (agent-behaviour.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScriptErrorCode {
    ScriptMissing = 1,
    ScriptExecutability = 2,
    ScriptTimedOut = 3,
    ScriptFailed = 4,
    OutputsLeftOpen = 6,
}

impl ScriptErrorCode {
    /// The number sent in the diagnostics payload.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A hook script failed. `message` is AWS's text; `log` is what goes into the payload's `log`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub code: ScriptErrorCode,
    /// The script's `location` as written in the appspec.
    pub script_name: String,
    /// The exact AWS message (for example `Script at specified location: scripts/start.sh
    /// failed with exit code 3`).
    pub message: String,
    /// A one-line summary (event, script, reason, elapsed time, where the full output is),
    /// followed by the AWS diagnostic tail of the event's scripts.log entries.
    pub log: String,
}

impl ScriptError {
    /// The `Diagnostics.Payload` of `PutHostCommandComplete(Failed)`, fields in AWS's order:
    /// `{"error_code":…,"script_name":…,"message":…,"log":…}`.
    pub fn payload_json(&self) -> String {
        #[derive(Serialize)]
        struct Payload<'a> {
            error_code: u8,
            script_name: &'a str,
            message: &'a str,
            log: &'a str,
        }
        serde_json::to_string(&Payload {
            error_code: self.code.as_u8(),
            script_name: &self.script_name,
            message: &self.message,
            log: &self.log,
        })
        .unwrap_or_else(|e| {
            // Serializing plain strings cannot fail; keep AWS's fallback shape anyway.
            format!(
                r#"{{"error_code":"Unknown","script_name":{:?},"message":"Attempting minimal diagnostics","log":"Exception {e} occured"}}"#,
                self.script_name
            )
        })
    }
}

/// Why [`run_event`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A script failed: report it to the service as this ScriptError.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The agent's own I/O failed (log directory, scripts.log, output files). Report it as
    /// `UnknownError` (code 5).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl HookError {
    /// The payload `error_code`: the script's code, or 5 (`UNKNOWN_ERROR`) for our own failures.
    pub fn error_code(&self) -> u8 {
        match self {
            HookError::Script(e) => e.code.as_u8(),
            HookError::Io { .. } => 5,
        }
    }
}

/// The values exported to every hook script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    pub lifecycle_event: String,
    pub deployment_id: String,
    pub application_name: String,
    pub deployment_group_name: String,
    pub deployment_group_id: String,
    /// Revision variables when present: `BUNDLE_BUCKET`, `BUNDLE_KEY`, `BUNDLE_VERSION`,
    /// `BUNDLE_ETAG` (S3) or `BUNDLE_COMMIT` (GitHub).
    pub extra: Vec<(String, String)>,
}

/// How hooks run; the defaults are what the agent uses unless configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOptions {
    /// After a timeout's TERM, how long the process group gets before KILL.
    pub kill_grace: Duration,
    /// AWS behaviour: capture output through pipes and wait (up to the timeout) until every
    /// process holding them has closed them, failing with code 6 if they are still open.
    pub wait_for_inherited_output: bool,
    /// The deployments log (`<root_dir>/deployment-logs/codedeploy-agent-deployments.log`),
    /// when enabled.
    pub deployments_log: Option<PathBuf>,
    /// Where running scripts register their process groups, so the daemon can stop them when
    /// a shutdown is escalated.
    pub running: Option<std::sync::Arc<RunningHooks>>,
    /// scripts.log and deployments-log rotation; `max_bytes` is also the most of each
    /// script's captured output kept on disk (older output is punched out of the file).
    pub log_rotation: crate::logging::Rotation,
    /// What of the agent's environment hooks inherit (see [`hook_environment`]).
    pub env_policy: HookEnvPolicy,
    /// Offer each script [`REBOOT_REQUEST_ENV`] (the daemon with `hook_reboot_command` set).
    pub reboot_requests: bool,
}

/// How a hook's environment is built from the agent's (config `restrict_hook_env_to_allowlist`
/// and `strip_loader_env_in_hooks`; both off by default, as in v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookEnvPolicy {
    /// Start from `PATH`, `HOME` and `USER` only instead of the whole environment.
    pub restrict_to_allowlist: bool,
    /// Remove `LD_PRELOAD`, `LD_LIBRARY_PATH` and `LD_AUDIT`.
    pub strip_loader_vars: bool,
}

/// The agent's environment variables a hook keeps under `restrict_hook_env_to_allowlist`.
pub const HOOK_ENV_ALLOWLIST: &[&str] = &["PATH", "HOME", "USER"];

/// AWS credentials the agent may have in its environment: never passed to a hook (the AWS
/// agents remove the first three; the session token is useless without them and goes too).
pub const HOOK_ENV_CREDENTIALS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CREDENTIAL_FILE",
];

/// Dynamic-loader variables removed under `strip_loader_env_in_hooks`.
pub const HOOK_ENV_LOADER: &[&str] = &["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"];

/// Sets a hook's environment on `cmd`: the agent's environment (or only
/// [`HOOK_ENV_ALLOWLIST`] of it), then the deployment variables, then removes the
/// credentials and (when asked) the loader variables, last so no deployment variable can put
/// them back. `runas` then sets `HOME`, `USER`, `LOGNAME` and `SHELL` of the target user.
pub fn hook_environment(cmd: &mut Command, env: &HookEnv, policy: HookEnvPolicy) {
    if policy.restrict_to_allowlist {
        cmd.env_clear();
        for name in HOOK_ENV_ALLOWLIST {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
    }
    cmd.env("LIFECYCLE_EVENT", &env.lifecycle_event)
        .env("DEPLOYMENT_ID", &env.deployment_id)
        .env("APPLICATION_NAME", &env.application_name)
        .env("DEPLOYMENT_GROUP_NAME", &env.deployment_group_name)
        .env("DEPLOYMENT_GROUP_ID", &env.deployment_group_id)
        .envs(env.extra.iter().map(|(k, v)| (k, v)));
    for name in HOOK_ENV_CREDENTIALS {
        cmd.env_remove(name);
    }
    if policy.strip_loader_vars {
        for name in HOOK_ENV_LOADER {
            cmd.env_remove(name);
        }
    }
}

/// The process groups of hook scripts running right now.
#[derive(Debug, Default)]
pub struct RunningHooks {
    groups: std::sync::Mutex<std::collections::HashSet<i32>>,
}

impl PartialEq for RunningHooks {
    /// Registries are compared by identity: two options share one only if it is the same.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for RunningHooks {}

impl RunningHooks {
    fn groups(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i32>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, pgid: i32) {
        self.groups().insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.groups().remove(&pgid);
    }

    /// How many scripts are running.
    pub fn len(&self) -> usize {
        self.groups().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `signal` to every running script's process group; returns how many were sent.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> usize {
        let groups: Vec<i32> = self.groups().iter().copied().collect();
        groups
            .into_iter()
            .filter(|&g| nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), signal).is_ok())
            .count()
    }
}

impl Default for HookOptions {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            wait_for_inherited_output: false,
            deployments_log: None,
            running: None,
            log_rotation: crate::config::DEFAULT_SCRIPTS_LOG_ROTATION,
            env_policy: HookEnvPolicy::default(),
            reboot_requests: false,
        }
    }
}

/// One event to run.
#[derive(Debug, Clone, Copy)]
pub struct EventRun<'a> {
    /// The lifecycle event name (`ApplicationStart`).
    pub event: &'a str,
    pub scripts: &'a [Script],
    /// The chosen revision's `deployment-archive`: scripts are found here and run from here.
    pub archive_dir: &'a Path,
    /// The current deployment's directory: `logs/` is written here.
    pub deployment_dir: &'a Path,
    pub env: &'a HookEnv,
    pub options: &'a HookOptions,
    /// Scripts before this index are skipped: they ran before the reboot one of them asked for.
    pub first_script: usize,
}

/// The variable naming the file a script writes to ask for a reboot (docs/operations.md,
/// "Rebooting from a hook"): the agent creates it empty before the script starts (owned by the
/// script's user); anything written into it, by a script that then exits 0, asks the agent to
/// reboot the instance and continue with the next script after the boot.
pub const REBOOT_REQUEST_ENV: &str = "CODEDEPLOY_REBOOT_REQUEST_FILE";

/// What a successful event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventReport {
    pub scripts: Vec<ScriptReport>,
    /// The index of the script that asked for a reboot; the scripts after it have not run.
    pub reboot_after: Option<usize>,
}

/// One script that ran and succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptReport {
    pub location: String,
    pub elapsed: Duration,
    /// The files holding the script's full stdout and stderr (`None` with
    /// `wait_for_inherited_output`, where output goes through pipes to scripts.log only).
    pub output_files: Option<(PathBuf, PathBuf)>,
}

/// A script failure before it is wrapped into a [`ScriptError`] with the log tail.
struct Failure {
    code: ScriptErrorCode,
    message: String,
    /// Extra detail for the summary line only (the message stays AWS's).
    note: Option<String>,
}

impl Failure {
    fn new(code: ScriptErrorCode, message: String) -> Self {
        Self {
            code,
            message,
            note: None,
        }
    }
}

enum StepError {
    Script(Failure),
    Hook(HookError),
}

impl From<HookError> for StepError {
    fn from(e: HookError) -> Self {
        StepError::Hook(e)
    }
}

/// Runs `run.scripts` in order and stops at the first failure. An event without scripts does
/// nothing and writes no log.
#[tracing::instrument(skip_all, fields(event = run.event, deployment_id = %run.env.deployment_id))]
pub fn run_event(run: &EventRun<'_>) -> Result<EventReport, HookError> {
    let mut report = EventReport::default();
    if run.scripts.is_empty() {
        return Ok(report);
    }
    let event_start = Instant::now();
    let mut log = EventLog::open(
        run.deployment_dir,
        run.options.deployments_log.as_deref(),
        &run.env.deployment_id,
        run.options.log_rotation,
    )?;
    log.entry(format!("LifecycleEvent - {}\n", run.event));
    let archive_dir =
        normalise(
            &std::path::absolute(run.archive_dir).map_err(|source| HookError::Io {
                action: "resolve the archive directory",
                path: run.archive_dir.to_owned(),
                source,
            })?,
        );
    if run.first_script > 0 {
        log.entry(format!(
            "Continuing after the reboot script {} of {} asked for\n",
            run.first_script,
            run.scripts.len()
        ));
    }
    for (index, script) in run.scripts.iter().enumerate().skip(run.first_script) {
        let start = Instant::now();
        let reboot_file = run
            .options
            .reboot_requests
            .then(|| reboot_request_path(run));
        match run_script(run, &archive_dir, index, script, &mut log) {
            Ok(output_files) => {
                if let Some(error) = log.take_error() {
                    return Err(error);
                }
                report.scripts.push(ScriptReport {
                    location: script.location.clone(),
                    elapsed: start.elapsed(),
                    output_files,
                });
                if reboot_file.as_deref().is_some_and(take_reboot_request) {
                    log.entry(format!(
                        "Script - {} asked for a reboot; the agent reboots the instance and \
                         continues {} after the boot\n",
                        script.location,
                        match run.scripts.get(index + 1) {
                            Some(next) => format!("with {}", next.location),
                            None => format!("after {}", run.event),
                        }
                    ));
                    report.reboot_after = Some(index);
                    return Ok(report);
                }
            }
            Err(StepError::Hook(e)) => return Err(e),
            Err(StepError::Script(failure)) => {
                // A failed script's reboot request is not honoured.
                if let Some(file) = &reboot_file {
                    let _ = fs::remove_file(file);
                }
                let files = output_paths(run, index, script);
                let summary = Summary {
                    event: run.event,
                    index,
                    count: run.scripts.len(),
                    message: &failure.message,
                    note: failure.note.as_deref(),
                    script_elapsed: start.elapsed(),
                    event_elapsed: event_start.elapsed(),
                    output: (!run.options.wait_for_inherited_output && files.0.exists())
                        .then_some(&files),
                }
                .to_string();
                return Err(HookError::Script(ScriptError {
                    code: failure.code,
                    script_name: script.location.clone(),
                    message: failure.message,
                    log: format!("{summary}\n{}", log.tail()),
                }));
            }
        }
    }
    Ok(report)
}

/// `<deployment_dir>/logs/reboot-request`: the file [`REBOOT_REQUEST_ENV`] names.
fn reboot_request_path(run: &EventRun<'_>) -> PathBuf {
    run.deployment_dir.join("logs").join("reboot-request")
}

/// Creates the empty request file for a script about to run as `user` (the agent's own user
/// without one), replacing whatever was there.
fn prepare_reboot_request(path: &Path, user: Option<&RunAsUser>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Some(user) = user {
        std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}

/// True when the script wrote into its request file (a regular file, not a symlink), which is
/// removed either way.
fn take_reboot_request(path: &Path) -> bool {
    let asked = fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0);
    let _ = fs::remove_file(path);
    asked
}

/// Writes one line about the deployment itself (not a script's output) to its scripts.log
/// and the deployments log, timestamped as hook entries are. Failures are only warned about.
pub fn log_note(deployment_dir: &Path, deployment_id: &str, options: &HookOptions, line: &str) {
    match EventLog::open(
        deployment_dir,
        options.deployments_log.as_deref(),
        deployment_id,
        options.log_rotation,
    ) {
        Ok(mut log) => {
            log.entry(format!("{line}\n"));
            if let Some(e) = log.take_error() {
                tracing::warn!(error = %e, "cannot write a note to the deployment's logs");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot open the deployment's logs for a note"),
    }
}

/// The first line of a failure's `log`.
struct Summary<'a> {
    event: &'a str,
    index: usize,
    count: usize,
    message: &'a str,
    note: Option<&'a str>,
    script_elapsed: Duration,
    event_elapsed: Duration,
    output: Option<&'a (PathBuf, PathBuf)>,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{event} failed at script {n} of {count} after {script:.1} s (event {total:.1} s): {message}",
            event = self.event,
            n = self.index + 1,
            count = self.count,
            script = self.script_elapsed.as_secs_f64(),
            total = self.event_elapsed.as_secs_f64(),
            message = self.message,
        )?;
        if let Some(note) = self.note {
            write!(f, "; {note}")?;
        }
        if let Some((out, err)) = self.output {
            write!(
                f,
                "; full output in {} and {}",
                out.display(),
                err.display()
            )?;
        }
        f.write_str("]")
    }
}

/// `Script at specified location: <loc>[ run as user <user>]`.
fn prefix(script: &Script) -> String {
    match &script.runas {
        Some(user) => format!(
            "Script at specified location: {} run as user {user}",
            script.location
        ),
        None => format!("Script at specified location: {}", script.location),
    }
}

/// How often a spawn failing with ETXTBSY is retried.
const MAX_BUSY_RETRIES: u32 = 10;

/// Runs one script: checks, spawn, supervision, outcome. Returns the output files on success.
fn run_script(
    run: &EventRun<'_>,
    archive_dir: &Path,
    index: usize,
    script: &Script,
    log: &mut EventLog,
) -> Result<Option<(PathBuf, PathBuf)>, StepError> {
    let location = &script.location;
    let path = locate(archive_dir, location).map_err(StepError::Script)?;

    if access(&path, AccessFlags::X_OK).is_err() {
        tracing::warn!(
            "Script at specified location: {location} is not executable.  Trying to make it executable."
        );
        let chmod = fs::metadata(&path).and_then(|m| {
            let mode = m.permissions().mode() | 0o111;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        });
        if let Err(error) = chmod {
            tracing::debug!(%error, path = %path.display(), "chmod +x failed");
            return Err(StepError::Script(Failure::new(
                ScriptErrorCode::ScriptExecutability,
                format!("Unable to set script at specified location: {location} as executable"),
            )));
        }
    }

    log.entry(format!("Script - {location}\n"));

    let fail_with_error = |kind: &str, message: &str| {
        StepError::Script(Failure::new(
            ScriptErrorCode::ScriptFailed,
            format!(
                "{} failed with error {kind} with message {message}",
                prefix(script)
            ),
        ))
    };

    let plan = plan_command(&path, script, nix::unistd::geteuid().as_raw())
        .map_err(|(kind, message)| fail_with_error(&kind, &message))?;

    let files = output_paths(run, index, script);
    let reboot_file = run
        .options
        .reboot_requests
        .then(|| reboot_request_path(run));
    if let Some(path) = &reboot_file {
        prepare_reboot_request(path, plan.user.as_ref()).map_err(|e| {
            fail_with_error("RebootRequestFile", &format!("{e} - {}", path.display()))
        })?;
    }
    let deadline = Instant::now().checked_add(Duration::from_secs(script.timeout));
    let mut fallback_to_sh = false;
    let mut busy_retries = 0u32;
    let outcome = loop {
        let mut cmd = build_command(&plan, run, archive_dir, fallback_to_sh);
        if let Some(path) = &reboot_file {
            cmd.env(REBOOT_REQUEST_ENV, path);
        }
        let capture = if run.options.wait_for_inherited_output {
            Capture::Pipes
        } else {
            Capture::Files {
                stdout: open_output(&files.0, run.options.log_rotation.max_bytes)?,
                stderr: open_output(&files.1, run.options.log_rotation.max_bytes)?,
            }
        };
        match supervise::run(
            cmd,
            capture,
            deadline,
            run.options.kill_grace,
            log,
            location,
            run.options.running.as_deref(),
        ) {
            Ok(outcome) => break outcome,
            // A script without a `#!` line: run it with /bin/sh, as execvp and Ruby do.
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) && !fallback_to_sh && plan.direct => {
                fallback_to_sh = true;
            }
            // "Text file busy": a process forked elsewhere in the agent still held a write
            // handle on the freshly written script when we tried to exec it. It goes away as
            // soon as that process execs; retry briefly (at most about 1.3 s in all).
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY) && busy_retries < MAX_BUSY_RETRIES =>
            {
                tracing::debug!(location = %location, attempt = busy_retries + 1, "script is busy (ETXTBSY); retrying");
                std::thread::sleep(Duration::from_millis(10 << busy_retries.min(4)));
                busy_retries += 1;
            }
            Err(e) => {
                let (kind, message) = describe_io_error(&e, &plan.program);
                return Err(fail_with_error(&kind, &message));
            }
        }
    };

    match outcome {
        Outcome::Exited(status) => exit_status_result(status, script),
        Outcome::TimedOut { killed } => Err(StepError::Script(Failure {
            code: ScriptErrorCode::ScriptTimedOut,
            message: format!(
                "Script at specified location: {location} failed to complete in {} seconds",
                script.timeout
            ),
            note: Some(if killed {
                format!(
                    "its process group was sent TERM, then KILL after {:?}",
                    run.options.kill_grace
                )
            } else {
                "its process group was sent TERM".to_owned()
            }),
        })),
        Outcome::OutputsLeftOpen(stream) => {
            let message = format!(
                "Script at specified location: {location} failed to close {}",
                stream.name()
            );
            tracing::error!("{message}");
            Err(StepError::Script(Failure::new(
                ScriptErrorCode::OutputsLeftOpen,
                message,
            )))
        }
    }
    .map(|()| (!run.options.wait_for_inherited_output).then_some(files))
}

fn exit_status_result(status: ExitStatus, script: &Script) -> Result<(), StepError> {
    use std::os::unix::process::ExitStatusExt;
    tracing::debug!(?status, location = %script.location, "hook script exited");
    let detail = match (status.code(), status.signal()) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| format!("signal {signal}"));
            format!("{} (killed by signal {name})", 128 + signal)
        }
        (None, None) => "unknown (no exit code or signal)".to_owned(),
    };
    Err(StepError::Script(Failure::new(
        ScriptErrorCode::ScriptFailed,
        format!("{} failed with exit code {detail}", prefix(script)),
    )))
}

/// Resolves `location` inside the archive. Missing → code 1 with AWS's message; a location
/// that resolves outside the archive (by `..` or through a symlink) → code 1 as well.
fn locate(archive_dir: &Path, location: &str) -> Result<PathBuf, Failure> {
    // Ruby's File.join: a leading `/` in the location does not make it absolute.
    let path = normalise(&archive_dir.join(location.trim_start_matches('/')));
    let escapes = |resolved: &Path| {
        Failure::new(
            ScriptErrorCode::ScriptMissing,
            format!(
                "Script at specified location: {location} resolves to {}, which is outside the deployment archive {}. Hook scripts must be inside the revision",
                resolved.display(),
                archive_dir.display()
            ),
        )
    };
    if !path.starts_with(archive_dir) {
        return Err(escapes(&path));
    }
    // File.exist?: follows symlinks, any error counts as "does not exist".
    if fs::metadata(&path).is_err() {
        return Err(Failure::new(
            ScriptErrorCode::ScriptMissing,
            format!(
                "Script does not exist at specified location: {}",
                path.display()
            ),
        ));
    }
    let real = fs::canonicalize(&path).map_err(|_| escapes(&path))?;
    let real_archive = fs::canonicalize(archive_dir).map_err(|_| escapes(&path))?;
    if !real.starts_with(&real_archive) {
        return Err(escapes(&real));
    }
    Ok(path)
}

/// Lexical normalisation like Ruby's `File.expand_path` on an absolute path: drops `.`,
/// resolves `..` against the components before it.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// What to execute for a script, decided before the fork.
struct CommandPlan {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// Credentials to switch to in the child (root running `runas`).
    user: Option<RunAsUser>,
    /// True when `program` is the script itself (so an ENOEXEC fallback to /bin/sh applies).
    direct: bool,
    script: PathBuf,
}

/// Decides how to run the script given `runas`, `sudo` and the agent's effective uid. Errors
/// are `(kind, message)` for `failed with error <kind> with message <message>`.
fn plan_command(
    path: &Path,
    script: &Script,
    euid: libc::uid_t,
) -> Result<CommandPlan, (String, String)> {
    let is_root = euid == 0;
    let direct = |user| CommandPlan {
        program: path.to_owned(),
        args: Vec::new(),
        user,
        direct: true,
        script: path.to_owned(),
    };
    let via_sudo = |user: Option<&str>| {
        let mut args: Vec<std::ffi::OsString> = vec!["-n".into()];
        if let Some(user) = user {
            args.extend(["-u".into(), user.into()]);
        }
        args.extend(["--".into(), path.as_os_str().to_owned()]);
        CommandPlan {
            program: PathBuf::from("sudo"),
            args,
            user: None,
            direct: false,
            script: path.to_owned(),
        }
    };
    match (&script.runas, is_root, script.sudo) {
        (None, true, _) | (None, false, false) => Ok(direct(None)),
        (None, false, true) => Ok(via_sudo(None)),
        (Some(name), false, true) => Ok(via_sudo(Some(name))),
        (Some(name), is_root, false) | (Some(name), is_root @ true, true) => {
            let user =
                RunAsUser::resolve(name).map_err(|e| (e.kind().to_owned(), e.to_string()))?;
            if is_root {
                Ok(direct(Some(user)))
            } else if user.uid == euid {
                // Already that user: nothing to switch.
                Ok(direct(None))
            } else {
                Err((
                    "NotRoot".to_owned(),
                    format!(
                        "the agent is not running as root, so it cannot switch to user {name}; run the agent as root or set sudo: true for this script"
                    ),
                ))
            }
        }
    }
}

fn build_command(
    plan: &CommandPlan,
    run: &EventRun<'_>,
    archive_dir: &Path,
    via_sh: bool,
) -> Command {
    let mut cmd = if via_sh {
        let mut c = Command::new("/bin/sh");
        c.arg(&plan.script);
        c
    } else {
        let mut c = Command::new(&plan.program);
        c.args(&plan.args);
        c
    };
    cmd.current_dir(archive_dir)
        .stdin(Stdio::null())
        .process_group(0);
    hook_environment(&mut cmd, run.env, run.options.env_policy);
    if let Some(limit) = crate::hardening::hook_core_limit() {
        // The agent lowered its own core-file limit (disable_core_dumps); the hook gets the
        // host's back.
        // SAFETY: runs in the child between fork and exec; setrlimit is an async-signal-safe
        // system call on a value copied into the closure; nothing is allocated or locked.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_CORE, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    if let Some(user) = &plan.user {
        user.apply(&mut cmd);
    }
    cmd
}

/// `Errno::ENOENT` / `No such file or directory - <program>`, in the shape of Ruby's messages.
fn describe_io_error(error: &io::Error, program: &Path) -> (String, String) {
    match error.raw_os_error() {
        Some(code) => {
            let errno = nix::errno::Errno::from_raw(code);
            (
                format!("Errno::{errno:?}"),
                format!("{} - {}", errno.desc(), program.display()),
            )
        }
        None => (format!("{:?}", error.kind()), error.to_string()),
    }
}

/// `<deployment_dir>/logs/hooks/<NN>-<event>-<script file name>.stdout|.stderr`.
fn output_paths(run: &EventRun<'_>, index: usize, script: &Script) -> (PathBuf, PathBuf) {
    let base = Path::new(&script.location)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".to_owned());
    let stem = format!(
        "{:02}-{}-{}",
        index + 1,
        file_name_safe(run.event),
        file_name_safe(&base)
    );
    let dir = run.deployment_dir.join("logs").join("hooks");
    (
        dir.join(format!("{stem}.stdout")),
        dir.join(format!("{stem}.stderr")),
    )
}

fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Opens (appending) one output file: a write handle for the script and a read handle for us
/// (writable too, so old output can be punched out of it to keep it under `keep` bytes).
fn open_output(path: &Path, keep: u64) -> Result<OutputFile, HookError> {
    let io_err = |action, source| HookError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err("create the hook output directory for", e))?;
    }
    let writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err("create the hook output file", e))?;
    let start = writer
        .metadata()
        .map_err(|e| io_err("stat the hook output file", e))?
        .len();
    let reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err("open the hook output file", e))?;
    Ok(OutputFile {
        writer,
        reader,
        start,
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_resolves_dots_lexically() {
        assert_eq!(
            normalise(Path::new("/a/b/./c/../d")),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(normalise(Path::new("/a/../../x")), PathBuf::from("/x"));
    }

    #[test]
    fn a_location_with_dot_dot_out_of_the_archive_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate(dir.path(), "../../bin/sh").expect_err("must escape");
        assert_eq!(err.code, ScriptErrorCode::ScriptMissing);
        assert!(
            err.message.contains("outside the deployment archive"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_leading_slash_stays_inside_the_archive_as_in_ruby() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate(dir.path(), "/bin/sh").expect_err("missing inside the archive");
        assert_eq!(
            err.message,
            format!(
                "Script does not exist at specified location: {}/bin/sh",
                dir.path().display()
            )
        );
    }

    #[test]
    fn signals_are_described_with_128_plus_the_number() {
        use std::os::unix::process::ExitStatusExt;
        let script = Script {
            location: "s.sh".into(),
            timeout: 1,
            runas: None,
            sudo: false,
            position: Default::default(),
        };
        let Err(StepError::Script(f)) = exit_status_result(ExitStatus::from_raw(9), &script) else {
            panic!("a signal is a failure");
        };
        assert_eq!(
            f.message,
            "Script at specified location: s.sh failed with exit code 137 (killed by signal SIGKILL)"
        );
    }

    fn plan(runas: Option<&str>, sudo: bool, euid: u32) -> Result<CommandPlan, (String, String)> {
        let script = Script {
            location: "s.sh".into(),
            timeout: 1,
            runas: runas.map(str::to_owned),
            sudo,
            position: Default::default(),
        };
        plan_command(Path::new("/a/s.sh"), &script, euid)
    }

    fn argv(p: &CommandPlan) -> Vec<String> {
        std::iter::once(p.program.as_os_str())
            .chain(p.args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn root_runs_the_script_directly_with_or_without_sudo() {
        for sudo in [false, true] {
            let p = plan(None, sudo, 0).expect("plan");
            assert_eq!(argv(&p), ["/a/s.sh"]);
            assert!(p.direct && p.user.is_none());
            let p = plan(Some("root"), sudo, 0).expect("plan");
            assert_eq!(argv(&p), ["/a/s.sh"]);
            assert_eq!(p.user.as_ref().map(|u| u.uid), Some(0));
        }
    }

    #[test]
    fn without_root_sudo_goes_through_sudo_non_interactively() {
        let p = plan(None, true, 1000).expect("plan");
        assert_eq!(argv(&p), ["sudo", "-n", "--", "/a/s.sh"]);
        let p = plan(Some("app"), true, 1000).expect("plan");
        assert_eq!(argv(&p), ["sudo", "-n", "-u", "app", "--", "/a/s.sh"]);
        let p = plan(None, false, 1000).expect("plan");
        assert_eq!(argv(&p), ["/a/s.sh"]);
    }

    #[test]
    fn without_root_runas_needs_sudo() {
        let (kind, message) = plan(Some("root"), false, 1000).err().expect("refused");
        assert_eq!(kind, "NotRoot");
        assert!(
            message.contains("run the agent as root or set sudo: true"),
            "{message}"
        );
    }

    #[test]
    fn payload_fields_are_in_aws_order() {
        let e = ScriptError {
            code: ScriptErrorCode::ScriptFailed,
            script_name: "s.sh".into(),
            message: "m".into(),
            log: "l\n".into(),
        };
        assert_eq!(
            e.payload_json(),
            r#"{"error_code":4,"script_name":"s.sh","message":"m","log":"l\n"}"#
        );
    }
}
