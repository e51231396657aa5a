//! The poll loop and the life of one host command (agent-behaviour.md §1.9), with the rules
//! that never bend: every acknowledged command gets exactly one final report, retried until
//! the service accepts it (also across restarts, through the tracking files); a command that
//! is already running is never run twice; commands of one deployment group run one at a time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::backoff::{ThrottleGate, error_backoff, with_jitter};
use super::notify::Notifier;
use super::status::Observed;
use super::tracking::{FAILED_AFTER_RESTART_PAYLOAD, OwedResult, Resume, Tracker};
use crate::control::{ControlError, Envelope, ErrorClass, HostCommand, HostCommands, status};
use crate::deploy::executor::{
    CommandFailure, EngineSettings, Executor, HookMapping, Progress, ResumePoint, success_payload,
};
use crate::deploy::layout::DeploymentRoot;
use crate::revision::{Fetch, Fetcher};
use crate::spec::{self, DeploymentSpec};

mod reboot;

/// The payload of a noop command completed after the acknowledgement answered `Failed`.
pub const NOOP_PAYLOAD: &str =
    r#"{"error_code":0,"script_name":"","message":"Succeeded: CompletedNoopCommand","log":""}"#;

/// How the daemon behaves.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Sleep after every poll (config `wait_between_runs`).
    pub wait_between_runs: Duration,
    /// Commands running at once (the AWS agent's thread pool: 16).
    pub max_concurrent: usize,
    /// Up to this long, at random, before the first poll, so a fleet launched together does
    /// not poll in lock-step.
    pub startup_jitter: Duration,
    /// How long a graceful shutdown waits for running commands
    /// (`kill_agent_max_wait_time_seconds`).
    pub shutdown_wait: Duration,
    /// After an escalated shutdown's TERM, how long hooks get before KILL.
    pub kill_grace: Duration,
    /// Longest wait between two attempts to deliver a final report.
    pub report_retry_max: Duration,
    /// A poll loop silent for longer than this is hung: the systemd watchdog stops being
    /// pinged (read timeout + the longest error backoff + margin).
    pub watchdog_stale_after: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            wait_between_runs: Duration::from_secs(1),
            max_concurrent: 16,
            startup_jitter: Duration::from_secs(5),
            shutdown_wait: Duration::from_secs(7200),
            kill_grace: Duration::from_secs(5),
            report_retry_max: Duration::from_secs(60),
            watchdog_stale_after: Duration::from_secs(80 + 90 + 60),
        }
    }
}

/// The deployment engine as the daemon drives it: everything the executor needs, shareable
/// with blocking threads.
pub struct Engine {
    pub root: DeploymentRoot,
    pub settings: EngineSettings,
    pub fetcher: Arc<Fetcher>,
    pub mapping: HookMapping,
}

impl Engine {
    fn executor<'a>(&'a self, fetcher: &'a dyn Fetch) -> Executor<'a> {
        Executor {
            root: self.root.clone(),
            settings: self.settings.clone(),
            fetcher,
        }
    }

    /// Takes the group's deployment lock for one command, waiting (with a log line) while a
    /// `codedeploy-local` run of the group holds it. A group the layout refuses fails here
    /// with the executor's message, before any file is touched.
    fn group_lock(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<crate::deploy::layout::GroupLock, CommandFailure> {
        let group = &spec.deployment_group_id;
        crate::deploy::layout::check_group_name(group, &self.settings.tracking_dir_name)
            .map_err(CommandFailure::unknown)?;
        self.root
            .lock_group(group, &spec.deployment_id, &mut |message| {
                tracing::info!("{message}")
            })
            .map_err(|e| {
                CommandFailure::unknown(format!(
                    "cannot take the deployment lock {} of group {group}: {e}",
                    self.root.group_lock_file(group).display()
                ))
            })
    }

    /// Runs blocking engine work off the async threads; a panic becomes a failed command.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        work: impl FnOnce(&Engine) -> Result<T, CommandFailure> + Send + 'static,
    ) -> Result<T, CommandFailure> {
        let engine = Arc::clone(self);
        // The command's span (host command, deployment) follows the work onto its thread.
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| work(&engine))).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, what, "the deployment engine panicked");
                Err(CommandFailure::unknown(format!(
                    "The agent hit an internal error while running {what}: {e}. The agent keeps \
                     running; please report this with the agent log."
                )))
            }
        }
    }
}

/// Feeds the engine's progress into the metrics.
fn record_progress(observed: &Observed, p: &Progress) {
    use std::sync::atomic::Ordering::Relaxed;
    match p {
        Progress::EventFinished { elapsed, .. } => observed.metrics.hook_seconds.observe(*elapsed),
        Progress::Downloaded { bytes, .. } => {
            observed.metrics.bytes_downloaded.fetch_add(*bytes, Relaxed);
        }
        Progress::Installed { summary, .. } => {
            observed
                .metrics
                .files_installed
                .fetch_add(summary.copied as u64, Relaxed);
        }
        _ => {}
    }
}

/// How a call of [`Agent::settle`] ended.
pub(super) enum Settled<T> {
    Accepted(T),
    /// The service definitively refused it.
    Rejected(ControlError),
    /// An immediate shutdown stopped the retries.
    Interrupted(ControlError),
}

/// Signals the daemon understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    Running,
    /// Stop polling, let running commands finish (up to `shutdown_wait`), report, exit.
    Graceful,
    /// Stop now: TERM the hooks' process groups, wait `kill_grace`, KILL; leave the tracking
    /// files so the next start reports the commands as failed.
    Immediate,
}

/// The daemon's state.
pub struct Agent<C> {
    pub client: C,
    pub host_identifier: String,
    pub engine: Arc<Engine>,
    pub tracker: Tracker,
    pub options: DaemonOptions,
    gate: ThrottleGate,
    in_flight: Mutex<HashSet<String>>,
    /// A hook's reboot is under way: the poll loop takes no more commands.
    reboot_pending: std::sync::atomic::AtomicBool,
    group_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Deployments whose owed report (from an earlier run) recovery has not settled yet; a new
    /// command of one of them waits (`command_state`: its start would replace the files).
    recovering: Mutex<HashSet<String>>,
    recovery_progress: tokio::sync::Notify,
    /// systemd notifications (a no-op outside systemd).
    pub notifier: Notifier,
    /// When the poll loop last went round; the watchdog pings only while it is recent.
    heartbeat: Mutex<Instant>,
    /// Status and metrics, shared with the status file writer and the health endpoint.
    pub observed: Arc<Observed>,
    /// Self-update (`UpdateDeploymentAgent`, src/daemon/update.rs); `None`: refused.
    pub updater: Option<Arc<crate::update::command::Updater>>,
    /// Set while an update waits for running commands or switches binaries: no polls.
    pub(super) updating: std::sync::atomic::AtomicBool,
    /// Woken when a command leaves `in_flight` or `updating` is cleared.
    pub(super) commands_changed: tokio::sync::Notify,
}

/// Why a polled command was not accepted (§1.9 step 2). Feeds the error backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRejected {
    #[error("Host Identifier mismatch: {ours} != {theirs}")]
    HostMismatch { ours: String, theirs: String },
    #[error("Command Name missing")]
    NameMissing,
}

/// §1.9 step 2: the polled host identifier must be a substring of ours; a name is required.
pub fn validate_command(ours: &str, command: &HostCommand) -> Result<(), CommandRejected> {
    let theirs = command.host_identifier.as_deref().unwrap_or_default();
    if !ours.contains(theirs) {
        return Err(CommandRejected::HostMismatch {
            ours: ours.into(),
            theirs: theirs.into(),
        });
    }
    if command.command_name.as_deref().is_none_or(str::is_empty) {
        return Err(CommandRejected::NameMissing);
    }
    Ok(())
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<Shutdown>) -> bool {
    if *shutdown.borrow() != Shutdown::Running {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

impl<C: HostCommands + 'static> Agent<C> {
    pub fn new(
        client: C,
        host_identifier: String,
        engine: Engine,
        tracker: Tracker,
        options: DaemonOptions,
    ) -> Self {
        let host_identifier_for_status = host_identifier.clone();
        let options_for_status = options.clone();
        Self {
            client,
            host_identifier,
            engine: Arc::new(engine),
            tracker,
            options,
            gate: ThrottleGate::default(),
            in_flight: Mutex::new(HashSet::new()),
            reboot_pending: std::sync::atomic::AtomicBool::new(false),
            group_locks: Mutex::new(HashMap::new()),
            recovering: Mutex::new(HashSet::new()),
            recovery_progress: tokio::sync::Notify::new(),
            notifier: Notifier::from_env(),
            heartbeat: Mutex::new(Instant::now()),
            observed: Arc::new(Observed::new(
                host_identifier_for_status,
                options_for_status.watchdog_stale_after,
            )),
            updater: None,
            updating: std::sync::atomic::AtomicBool::new(false),
            commands_changed: tokio::sync::Notify::new(),
        }
    }

    /// Commands running now (including an update waiting for the others).
    pub(super) fn in_flight_count(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(super) fn beat(&self) {
        *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Pings systemd's watchdog every half interval while the poll loop is alive: it goes
    /// round at least once per read timeout plus the longest backoff, so a loop silent for
    /// longer than `stale_after` is hung and the pings stop.
    fn spawn_watchdog(self: &Arc<Self>, tasks: &mut JoinSet<()>, stale_after: Duration) {
        let Some(interval) = super::notify::watchdog_interval() else {
            return;
        };
        let me = Arc::clone(self);
        tasks.spawn(async move {
            loop {
                let last = *me.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() < stale_after {
                    me.notifier.watchdog();
                } else {
                    tracing::error!(
                        "the poll loop has not gone round for {}s; not pinging the watchdog",
                        last.elapsed().as_secs()
                    );
                }
                tokio::time::sleep(interval / 2).await;
            }
        });
    }

    /// Calls the service through the throttle gate, retrying transient failures with backoff
    /// up to `attempts` times.
    async fn call<T, F, Fut>(&self, what: &str, attempts: u32, mut op: F) -> Result<T, ControlError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ControlError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.gate.pass().await;
            match op().await {
                Ok(v) => {
                    self.gate.succeeded();
                    return Ok(v);
                }
                Err(e) => {
                    if e.is_throttling() {
                        let wait = self.gate.throttled(Instant::now());
                        tracing::warn!(
                            what,
                            wait_s = wait.as_secs_f64(),
                            "throttled by the service"
                        );
                    }
                    if attempt >= attempts || !e.is_retryable() {
                        return Err(e);
                    }
                    let wait = with_jitter(
                        Duration::from_secs(1 << attempt.min(6)).min(self.options.report_retry_max),
                        0.2,
                    );
                    tracing::warn!(what, error = %e, attempt, "retrying after {:.1}s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The one retry policy of every call that reports a result to the service
    /// (`PutHostCommandComplete`, `PutHostCommandAcknowledgement`): through the throttle gate,
    /// retried with capped exponential backoff and jitter for as long as the error is
    /// transient or a matter of clock and credentials ([`ErrorClass`]), until the service
    /// answers, definitively rejects it, or an immediate shutdown stops it.
    pub(super) async fn settle<T, F, Fut>(
        &self,
        what: &str,
        host_command_id: &str,
        stop: &watch::Receiver<Shutdown>,
        mut op: F,
    ) -> Settled<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ControlError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.gate.pass().await;
            let e = match op().await {
                Ok(v) => {
                    self.gate.succeeded();
                    return Settled::Accepted(v);
                }
                Err(e) => e,
            };
            if e.is_throttling() {
                self.gate.throttled(Instant::now());
            }
            let class = e.class();
            if class == ErrorClass::Rejected {
                return Settled::Rejected(e);
            }
            if *stop.borrow() == Shutdown::Immediate {
                return Settled::Interrupted(e);
            }
            let wait = with_jitter(
                Duration::from_secs(1u64 << attempt.min(6)).min(self.options.report_retry_max),
                0.2,
            );
            tracing::warn!(
                what,
                host_command_id,
                error_code = e.code(),
                error = %e,
                attempt,
                class = ?class,
                "{what} was not accepted; retrying in {:.1}s",
                wait.as_secs_f64()
            );
            let mut stop = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s == Shutdown::Immediate) => {}
            }
        }
    }

    /// Delivers a final report, retrying until the service accepts it ([`Agent::settle`]).
    /// True when it is settled (accepted, or definitively rejected: retrying cannot change the
    /// answer), so its files may go; false when an immediate shutdown stopped it (the files
    /// keep what is owed for the next start). The decision is logged with the error code.
    pub(super) async fn report(
        &self,
        host_command_id: &str,
        result: &OwedResult,
        stop: &watch::Receiver<Shutdown>,
    ) -> bool {
        let envelope = Envelope::json(result.payload.clone());
        let settled = self
            .settle("the final report", host_command_id, stop, || {
                self.client.put_host_command_complete(
                    host_command_id,
                    &result.status,
                    Some(&envelope),
                )
            })
            .await;
        match settled {
            Settled::Accepted(()) => {
                self.observed
                    .reported(host_command_id, &result.status, &result.payload);
                tracing::info!(host_command_id, status = %result.status, "reported");
                true
            }
            Settled::Rejected(e) => {
                tracing::error!(
                    host_command_id,
                    error_code = e.code(),
                    error = %e,
                    "the service definitively rejected the final report ({}); not retrying it, removing its tracking files",
                    e.code()
                );
                true
            }
            Settled::Interrupted(e) => {
                tracing::warn!(
                    host_command_id,
                    error_code = e.code(),
                    "shutting down before the report was accepted; it is kept for the next start"
                );
                false
            }
        }
    }

    /// Sends what earlier runs of the agent still owe (§4.3): a recorded result, or a code-7
    /// failure for a command that was cut off while it ran. Stale files are dropped.
    pub async fn recover(self: &Arc<Self>, stop: &watch::Receiver<Shutdown>) {
        let owed = self.owed_at_start();
        self.recover_owed(owed, stop).await;
    }

    /// What earlier runs owe, with each deployment marked as being recovered.
    fn owed_at_start(&self) -> Vec<super::command_state::Owed> {
        let owed = match self.tracker.owed() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, dir = %self.tracker.dir().display(), "Exception thrown during restart recovery");
                return Vec::new();
            }
        };
        self.recovering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(owed.iter().map(|o| o.deployment_id.clone()));
        owed
    }

    /// Recovery of `deployment_id` is settled (reported, or left for the next start).
    fn recovered(&self, deployment_id: &str) {
        self.recovering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment_id);
        self.recovery_progress.notify_waiters();
    }

    /// Waits while recovery still owes a report for `deployment_id`.
    async fn wait_for_recovery(&self, deployment_id: &str) {
        loop {
            let progress = self.recovery_progress.notified();
            if !self
                .recovering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(deployment_id)
            {
                return;
            }
            tracing::info!(
                deployment_id,
                "waiting for the report an earlier run owes for this deployment"
            );
            progress.await;
        }
    }

    async fn recover_owed(
        self: &Arc<Self>,
        owed: Vec<super::command_state::Owed>,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let mut resumes = Vec::new();
        for o in owed {
            if let (None, Some(resume)) = (&o.result, &o.resume) {
                resumes.push((o.clone(), resume.clone()));
                continue;
            }
            let result = match o.result {
                Some(r) => r,
                None => {
                    tracing::warn!(
                        "Deployment tracking file found: {}. The agent likely restarted while running a customer-supplied script. Failing the lifecycle event.",
                        self.tracker.dir().display()
                    );
                    OwedResult {
                        status: status::FAILED.into(),
                        payload: FAILED_AFTER_RESTART_PAYLOAD.into(),
                    }
                }
            };
            if self.report(&o.host_command_id, &result, stop).await {
                self.tracker.accepted(&o.deployment_id, &o.host_command_id);
            }
            self.recovered(&o.deployment_id);
        }
        // Commands that continue after a reboot, once every owed report is on its way.
        for (o, resume) in resumes {
            self.resume_after_reboot(&o.deployment_id, resume, stop)
                .await;
            self.recovered(&o.deployment_id);
        }
    }

    /// Polls until `shutdown` says stop, then waits for running commands as the signal asks.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<Shutdown>) {
        let slots = Arc::new(Semaphore::new(self.options.max_concurrent.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        {
            // Listed before the first poll, so a command of a deployment still owed waits.
            let owed = self.owed_at_start();
            let me = Arc::clone(&self);
            let stop = shutdown.clone();
            tasks.spawn(async move { me.recover_owed(owed, &stop).await });
        }
        let mut watchdog = JoinSet::new();
        self.spawn_watchdog(&mut watchdog, self.options.watchdog_stale_after);
        self.notifier.ready();
        let jitter = self
            .options
            .startup_jitter
            .mul_f64(super::backoff::random_fraction());
        if !sleep_or_shutdown(jitter, &mut shutdown).await {
            self.poll_loop(&mut shutdown, &slots, &mut tasks).await;
        }
        self.notifier.stopping();
        self.drain(&mut shutdown, &mut tasks).await;
        watchdog.abort_all();
    }

    async fn poll_loop(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<Shutdown>,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) {
        let mut errors: u32 = 0;
        let mut last_logged: Option<(String, Instant)> = None;
        loop {
            self.beat();
            if *shutdown.borrow() != Shutdown::Running {
                return;
            }
            if self
                .reboot_pending
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                // Waiting to be stopped by the reboot a hook asked for.
                if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                    return;
                }
                continue;
            }
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if self.wait_while_updating(shutdown).await {
                return;
            }
            // Wait for a free slot before asking for more work.
            let permit = tokio::select! {
                p = Arc::clone(slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.changed() => return,
            };
            tokio::select! {
                () = self.gate.pass() => {}
                _ = shutdown.changed() => return,
            }
            let started = Instant::now();
            let polled = tokio::select! {
                r = self.client.poll_host_command(&self.host_identifier) => r,
                // A command returned by a poll cut short here was never acknowledged: the
                // service hands it out again.
                _ = shutdown.changed() => return,
            };
            let failure: Option<(&str, String)> = match polled {
                Ok(None) => None,
                Ok(Some(command)) => match validate_command(&self.host_identifier, &command) {
                    Ok(()) => {
                        let id = command.host_command_identifier.clone();
                        let fresh = self
                            .in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id.clone());
                        if fresh {
                            let me = Arc::clone(self);
                            let stop = shutdown.clone();
                            tasks.spawn(async move {
                                let _permit = permit;
                                me.process(command, &stop).await;
                                me.in_flight
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&id);
                                me.commands_changed.notify_waiters();
                            });
                        } else {
                            tracing::info!(host_command_id = %id, "command is already running; not starting it twice");
                        }
                        None
                    }
                    Err(e) => Some(("rejected_command", e.to_string())),
                },
                Err(e) => {
                    if e.is_throttling() {
                        self.gate.throttled(Instant::now());
                        self.observed
                            .metrics
                            .throttles
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let kind = match &e {
                        _ if e.is_throttling() => "throttled",
                        ControlError::Network(_) => "network",
                        ControlError::Credentials(_) => "credentials",
                        ControlError::Service { .. } => "service",
                        ControlError::Decode(_) => "decode",
                    };
                    Some((
                        kind,
                        match &e {
                            ControlError::Network(m)
                                if m.contains("certificate verify failed")
                                    || m.contains("certificate") =>
                            {
                                format!(
                                    "Network error: {m}. Failed to execute the command. Your certificates might have been deleted"
                                )
                            }
                            ControlError::Network(_) | ControlError::Credentials(_) => {
                                e.to_string()
                            }
                            other if other.is_throttling() => format!(
                                "the service is throttling this agent's polls (backing off): {other}"
                            ),
                            other => format!("Cannot reach InstanceService: {other}"),
                        },
                    ))
                }
            };
            match failure {
                None => {
                    if errors > 0 {
                        tracing::info!(after = errors, "polling works again");
                    }
                    errors = 0;
                    self.gate.succeeded();
                    self.observed.poll_ok();
                }
                Some((kind, message)) => {
                    errors = errors.saturating_add(1);
                    self.observed.poll_failed(kind, &message, errors);
                    // The same error over and over is logged once a minute, not every time.
                    let repeat = last_logged.as_ref().is_some_and(|(m, at)| {
                        *m == message && at.elapsed() < Duration::from_secs(60)
                    });
                    let wait =
                        with_jitter(error_backoff(errors), 0.2).saturating_sub(started.elapsed());
                    if !repeat {
                        tracing::error!(
                            consecutive = errors,
                            "{message}; next try in {} s",
                            wait.as_secs_f64().ceil()
                        );
                        last_logged = Some((message, Instant::now()));
                    }
                    if sleep_or_shutdown(wait, shutdown).await {
                        return;
                    }
                    continue;
                }
            }
            if sleep_or_shutdown(self.options.wait_between_runs, shutdown).await {
                return;
            }
        }
    }

    async fn drain(&self, shutdown: &mut watch::Receiver<Shutdown>, tasks: &mut JoinSet<()>) {
        if tasks.is_empty() {
            return;
        }
        let running = self.engine.settings.hooks.running.clone();
        tracing::info!(
            "Gracefully shutting down agent child threads now, will wait up to {} seconds",
            self.options.shutdown_wait.as_secs()
        );
        let deadline = tokio::time::Instant::now() + self.options.shutdown_wait;
        loop {
            if *shutdown.borrow() == Shutdown::Immediate {
                break;
            }
            tokio::select! {
                next = tasks.join_next() => if next.is_none() {
                    tracing::info!("All agent child threads have been shut down");
                    return;
                },
                () = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.changed() => {}
            }
        }
        // Escalation: stop the engine's loops (unpack, copies, cleanup) at their next check,
        // stop the hooks, give them the grace period, then KILL what is left.
        crate::deploy::cancel::request();
        if let Some(running) = running {
            let n = running.signal_all(nix::sys::signal::Signal::SIGTERM);
            tracing::warn!(scripts = n, "stopping running hook scripts (TERM)");
            let until = Instant::now() + self.options.kill_grace;
            while !running.is_empty() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let n = running.signal_all(nix::sys::signal::Signal::SIGKILL);
            if n > 0 {
                tracing::warn!(scripts = n, "killed hook scripts that ignored TERM");
            }
        }
        // Give the commands a moment to record their results; what is not reported now is
        // reported by the next start from the tracking files.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }

    fn group_lock(&self, group: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.group_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(group.to_owned()).or_default())
    }

    /// One command, from its specification to its final report (§1.9 step 4).
    #[tracing::instrument(skip_all, fields(host_command_id = %command.host_command_identifier, command = command.command_name.as_deref().unwrap_or_default(), deployment_id = tracing::field::Empty))]
    async fn process(self: &Arc<Self>, command: HostCommand, stop: &watch::Receiver<Shutdown>) {
        let id = command.host_command_identifier.clone();
        let name = command.command_name.clone().unwrap_or_default();
        let execution = command.deployment_execution_id.clone().unwrap_or_default();
        let failed = |message: String| OwedResult {
            status: status::FAILED.into(),
            payload: CommandFailure::unknown(message).payload_json(),
        };
        self.observed.begin(&id, &name);
        if name == crate::update::COMMAND_NAME {
            self.process_update(&id, stop).await;
        } else {
            self.process_inner(&id, &name, &execution, failed, stop)
                .await;
        }
        // Whatever was not reported (an ack that said the command is done) leaves the list.
        self.observed.dropped(&id);
    }

    async fn process_inner(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        execution: &str,
        failed: impl Fn(String) -> OwedResult,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let (id, name, execution) = (id.to_owned(), name.to_owned(), execution.to_owned());

        // Steps 4.1–4.2: specification, then the noop check. Failures here are reported
        // without an acknowledgement, as the AWS agent does.
        let spec = match self.fetch_spec(&execution).await {
            Ok(spec) => spec,
            Err(message) => {
                tracing::error!("{message}");
                self.report(&id, &failed(message), stop).await;
                return;
            }
        };
        tracing::Span::current().record("deployment_id", spec.deployment_id.as_str());
        self.observed
            .deployment(&id, &spec.deployment_id, &spec.deployment_group_id);
        let lock = self.group_lock(&spec.deployment_group_id);
        let _serialised = lock.lock().await;
        let noop = {
            let (name, spec) = (name.clone(), spec.clone());
            self.engine
                .blocking("the noop check", move |e| {
                    e.executor(&*e.fetcher).is_noop(&name, &spec, &e.mapping)
                })
                .await
        };
        let noop = match noop {
            Ok(n) => n,
            Err(f) => {
                self.report(
                    &id,
                    &OwedResult {
                        status: status::FAILED.into(),
                        payload: f.payload_json(),
                    },
                    stop,
                )
                .await;
                return;
            }
        };

        // Step 4.3: acknowledge.
        let diagnostics = Envelope::json(format!("{{\"IsCommandNoop\":{noop}}}"));
        let ack = match self
            .settle("the acknowledgement", &id, stop, || {
                self.client
                    .put_host_command_acknowledgement(&id, Some(&diagnostics))
            })
            .await
        {
            Settled::Accepted(status) => Ok(status),
            Settled::Rejected(e) => Err(e),
            Settled::Interrupted(e) => {
                // Nothing ran and nothing is tracked: the service hands the command out again.
                tracing::warn!(
                    error_code = e.code(),
                    "shutting down before the acknowledgement was accepted"
                );
                return;
            }
        };
        match ack.as_ref().map(|s| s.as_deref()) {
            Err(e) => {
                tracing::error!(error_code = e.code(), error = %e, "the service rejected the acknowledgement");
                self.report(&id, &failed(e.to_string()), stop).await;
                return;
            }
            Ok(Some(status::SUCCEEDED)) => {
                tracing::info!("the service says the command already succeeded; nothing to do");
                return;
            }
            Ok(Some(status::FAILED)) => {
                // The AWS agent fetches the specification again here; a noop completes.
                let _ = self.fetch_spec(&execution).await;
                if noop {
                    let result = OwedResult {
                        status: status::SUCCEEDED.into(),
                        payload: NOOP_PAYLOAD.into(),
                    };
                    self.report(&id, &result, stop).await;
                }
                return;
            }
            Ok(_) => {}
        }

        // Steps 4.4–4.6: track, execute, record the result, report until accepted.
        let deployment_id = spec.deployment_id.clone();
        self.wait_for_recovery(&deployment_id).await;
        if let Err(e) = self.tracker.start(&deployment_id, &id) {
            tracing::error!(error = %e, "cannot write the deployment tracking file; running the command anyway");
        }
        self.execute_and_report(&id, &name, &execution, &spec, None, stop)
            .await;
    }

    /// Runs the command (from `resume` on when it continues after a reboot), records its
    /// result and reports it until accepted. A hook's reboot request hands over to
    /// [`Agent::reboot_for`]: then nothing is reported until the command ends after the boot.
    async fn execute_and_report(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        execution: &str,
        spec: &DeploymentSpec,
        resume: Option<&Resume>,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let deployment_id = spec.deployment_id.clone();
        let started = std::time::SystemTime::now();
        let result = {
            let (name, spec) = (name.to_owned(), spec.clone());
            let at = resume.map(|r| ResumePoint {
                event: r.event.clone(),
                next_script: r.next_script,
            });
            let observed = Arc::clone(&self.observed);
            self.engine
                .blocking("the command", move |e| {
                    // The same per-group lock codedeploy-local holds for a whole deployment.
                    let _group_lock = e.group_lock(&spec)?;
                    e.executor(&e.fetcher.for_spec(&spec)).execute_from(
                        &name,
                        &spec,
                        &e.mapping,
                        at.as_ref(),
                        &mut |p| record_progress(&observed, &p),
                    )
                })
                .await
        };
        if result.is_err() && crate::deploy::cancel::requested() {
            // Cut off by the escalated stop: left Running, so the next start reports it once
            // (code 7), as after a kill.
            tracing::warn!(
                "the command was interrupted by the agent's stop; the next start reports it as failed"
            );
            return;
        }
        let owed = match result {
            Ok(Some(reboot)) => {
                // A resumed command keeps the deadline of its first run.
                let deadline = resume.map_or_else(
                    || reboot::unix_seconds(started + reboot.event_timeout),
                    |r| r.deadline,
                );
                match self
                    .reboot_for(id, name, execution, spec, &reboot, deadline)
                    .await
                {
                    None => return,
                    Some(failed) => failed,
                }
            }
            Ok(None) => OwedResult {
                status: status::SUCCEEDED.into(),
                payload: success_payload(&self.engine.root, name, spec),
            },
            Err(f) => {
                // The executor has logged the failure ("command … failed after …").
                OwedResult {
                    status: status::FAILED.into(),
                    payload: f.payload_json(),
                }
            }
        };
        self.finish_and_report(&deployment_id, id, &owed, stop)
            .await;
    }

    /// Finished → (report until accepted) → Idle.
    async fn finish_and_report(
        &self,
        deployment_id: &str,
        id: &str,
        owed: &OwedResult,
        stop: &watch::Receiver<Shutdown>,
    ) {
        if let Err(e) = self.tracker.finish(deployment_id, id, owed) {
            tracing::error!(error = %e, "cannot record the command's result before reporting it");
        }
        if self.report(id, owed, stop).await {
            self.tracker.accepted(deployment_id, id);
        }
    }

    /// Gets and checks the deployment specification (§1.9 step 4.1, §3).
    async fn fetch_spec(&self, execution: &str) -> Result<DeploymentSpec, String> {
        let response = self
            .call("GetDeploymentSpecification", 4, || {
                self.client
                    .get_deployment_specification(execution, &self.host_identifier)
            })
            .await
            .map_err(|e| e.to_string())?;
        let system = response.deployment_system.clone().unwrap_or_default();
        if system != "CodeDeploy" {
            return Err(format!(
                "Deployment System mismatch: CodeDeploy != {system}"
            ));
        }
        let envelope = response
            .deployment_specification
            .ok_or_else(|| "Deployment Specification missing".to_owned())?
            .generic_envelope
            .ok_or_else(|| "Provided deployment spec was nil".to_owned())?;
        spec::parse_envelope(Some(&envelope.format), &envelope.payload, false)
            .map_err(|e| e.message)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::config::Config;
    use crate::control::{DeploymentSpecification, SpecificationResponse};
    use crate::deploy::executor::SUCCESS_PAYLOAD;

    /// An in-memory service: scripted answers, every call recorded.
    #[derive(Default)]
    struct Mock {
        commands: Mutex<VecDeque<HostCommand>>,
        specs: Mutex<HashMap<String, SpecificationResponse>>,
        calls: Mutex<Vec<(String, String)>>,
        complete_failures: Mutex<u32>,
        poll_failures: Mutex<VecDeque<ControlError>>,
    }

    impl Mock {
        fn calls(&self) -> Vec<(String, String)> {
            self.calls.lock().expect("lock").clone()
        }
        fn record(&self, op: &str, detail: String) {
            self.calls.lock().expect("lock").push((op.into(), detail));
        }
    }

    impl HostCommands for Arc<Mock> {
        async fn poll_host_command(
            &self,
            _host: &str,
        ) -> Result<Option<HostCommand>, ControlError> {
            if let Some(e) = self.poll_failures.lock().expect("lock").pop_front() {
                self.record("Poll", "error".into());
                return Err(e);
            }
            let c = self.commands.lock().expect("lock").pop_front();
            if c.is_some() {
                self.record("Poll", "command".into());
            }
            Ok(c)
        }
        async fn get_deployment_specification(
            &self,
            execution: &str,
            _host: &str,
        ) -> Result<SpecificationResponse, ControlError> {
            self.record("GetDeploymentSpecification", execution.into());
            Ok(self
                .specs
                .lock()
                .expect("lock")
                .get(execution)
                .cloned()
                .unwrap_or_default())
        }
        async fn put_host_command_acknowledgement(
            &self,
            id: &str,
            d: Option<&Envelope>,
        ) -> Result<Option<String>, ControlError> {
            self.record(
                "Ack",
                format!("{id} {}", d.map(|e| e.payload.clone()).unwrap_or_default()),
            );
            Ok(Some(status::IN_PROGRESS.into()))
        }
        async fn put_host_command_complete(
            &self,
            id: &str,
            st: &str,
            d: Option<&Envelope>,
        ) -> Result<(), ControlError> {
            let mut failures = self.complete_failures.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                self.record("CompleteRefused", id.into());
                return Err(ControlError::Service {
                    code: "ServerException".into(),
                    message: "".into(),
                    status: 500,
                    body: String::new(),
                });
            }
            self.record(
                "Complete",
                format!(
                    "{id} {st} {}",
                    d.map(|e| e.payload.clone()).unwrap_or_default()
                ),
            );
            Ok(())
        }
    }

    const HOST: &str = "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc";

    fn agent(mock: &Arc<Mock>, dir: &std::path::Path) -> Arc<Agent<Arc<Mock>>> {
        let root = DeploymentRoot::new(dir.join("root"), "codedeploy-agent");
        let settings = EngineSettings::from_config(&Config::system_defaults(), &root);
        let engine = Engine {
            root: root.clone(),
            settings,
            fetcher: Arc::new(Fetcher::default()),
            mapping: HookMapping::default_mapping(),
        };
        let options = DaemonOptions {
            wait_between_runs: Duration::from_millis(1),
            startup_jitter: Duration::ZERO,
            report_retry_max: Duration::from_millis(10),
            ..DaemonOptions::default()
        };
        Arc::new(Agent::new(
            Arc::clone(mock),
            HOST.into(),
            engine,
            Tracker::new(root.ongoing_dir("ongoing-deployment")),
            options,
        ))
    }

    fn command(id: &str, name: &str, host: &str) -> HostCommand {
        HostCommand {
            host_command_identifier: id.into(),
            host_identifier: Some(host.into()),
            deployment_execution_id: Some(format!("exec-{id}")),
            command_name: Some(name.into()),
            nonce: Some(0),
        }
    }

    fn spec_response(system: &str, format: &str) -> SpecificationResponse {
        SpecificationResponse {
            deployment_system: Some(system.into()),
            deployment_specification: Some(DeploymentSpecification {
                generic_envelope: Some(Envelope {
                    format: format.into(),
                    payload: "{}".into(),
                }),
                ..DeploymentSpecification::default()
            }),
        }
    }

    async fn run_until(agent: &Arc<Agent<Arc<Mock>>>, done: impl Fn() -> bool) {
        let (tx, rx) = watch::channel(Shutdown::Running);
        let handle = tokio::spawn(Arc::clone(agent).run(rx));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = tx.send(Shutdown::Graceful);
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }

    fn completes(mock: &Mock) -> Vec<String> {
        mock.calls()
            .into_iter()
            .filter(|(op, _)| op == "Complete")
            .map(|(_, d)| d)
            .collect()
    }

    #[tokio::test]
    async fn wrong_deployment_system_fails_without_an_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        mock.commands
            .lock()
            .expect("lock")
            .push_back(command("hc-1", "Install", HOST));
        mock.specs
            .lock()
            .expect("lock")
            .insert("exec-hc-1".into(), spec_response("Foo", "PKCS7/JSON"));
        let a = agent(&mock, dir.path());
        run_until(&a, || !completes(&mock).is_empty()).await;
        assert_eq!(
            completes(&mock),
            [
                r#"hc-1 Failed {"error_code":5,"script_name":"","message":"Deployment System mismatch: CodeDeploy != Foo","log":""}"#
            ]
        );
        assert!(!mock.calls().iter().any(|(op, _)| op == "Ack"));
    }

    #[tokio::test]
    async fn text_json_is_refused_by_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        mock.commands
            .lock()
            .expect("lock")
            .push_back(command("hc-2", "DownloadBundle", HOST));
        mock.specs
            .lock()
            .expect("lock")
            .insert("exec-hc-2".into(), spec_response("CodeDeploy", "TEXT/JSON"));
        let a = agent(&mock, dir.path());
        run_until(&a, || !completes(&mock).is_empty()).await;
        assert_eq!(
            completes(&mock),
            [
                r#"hc-2 Failed {"error_code":5,"script_name":"","message":"Unsupported DeploymentSpecification format: TEXT/JSON","log":""}"#
            ]
        );
    }

    #[tokio::test]
    async fn a_host_mismatch_is_neither_fetched_nor_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        mock.commands.lock().expect("lock").push_back(command(
            "hc-3",
            "Install",
            "arn:aws:ec2:us-east-1:1:instance/i-other",
        ));
        let a = agent(&mock, dir.path());
        run_until(&a, || a.observed.report().consecutive_errors > 0).await;
        assert!(
            mock.calls().iter().all(|(op, _)| op == "Poll"),
            "{:?}",
            mock.calls()
        );
        let h = a.observed.report();
        assert!(h.last_error.is_some_and(|e| e.starts_with(
            "Host Identifier mismatch: arn:aws:ec2:us-east-1:111122223333:instance/i-0abc != "
        )));
    }

    #[tokio::test]
    async fn an_owed_code_7_is_reported_once_even_if_the_service_refuses_at_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        *mock.complete_failures.lock().expect("lock") = 2;
        let a = agent(&mock, dir.path());
        a.tracker.start("d-RUNNING", "hc-cut-off").expect("track");
        run_until(&a, || !completes(&mock).is_empty()).await;
        assert_eq!(
            completes(&mock),
            [format!("hc-cut-off Failed {FAILED_AFTER_RESTART_PAYLOAD}")]
        );
        assert_eq!(
            mock.calls()
                .iter()
                .filter(|(op, _)| op == "CompleteRefused")
                .count(),
            2
        );
        assert!(a.tracker.owed().expect("owed").is_empty());
    }

    #[tokio::test]
    async fn a_recorded_result_is_reported_instead_of_code_7() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        let a = agent(&mock, dir.path());
        a.tracker.start("d-DONE", "hc-done").expect("track");
        a.tracker
            .finish(
                "d-DONE",
                "hc-done",
                &OwedResult {
                    status: "Succeeded".into(),
                    payload: SUCCESS_PAYLOAD.into(),
                },
            )
            .expect("finish");
        run_until(&a, || !completes(&mock).is_empty()).await;
        assert_eq!(
            completes(&mock),
            [format!("hc-done Succeeded {SUCCESS_PAYLOAD}")]
        );
    }

    #[tokio::test]
    async fn a_missing_specification_fails_without_an_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = Arc::new(Mock::default());
        mock.commands
            .lock()
            .expect("lock")
            .push_back(command("hc-4", "Frobnicate", HOST));
        mock.specs.lock().expect("lock").insert(
            "exec-hc-4".into(),
            SpecificationResponse {
                deployment_system: Some("CodeDeploy".into()),
                deployment_specification: None,
            },
        );
        let a = agent(&mock, dir.path());
        run_until(&a, || !completes(&mock).is_empty()).await;
        assert_eq!(
            completes(&mock),
            [
                r#"hc-4 Failed {"error_code":5,"script_name":"","message":"Deployment Specification missing","log":""}"#
            ]
        );
    }

    #[test]
    fn host_identifier_is_a_substring_match() {
        let ours = HOST;
        assert!(validate_command(ours, &command("a", "Install", "i-0abc")).is_ok());
        assert_eq!(
            validate_command(ours, &command("a", "", HOST)),
            Err(CommandRejected::NameMissing)
        );
    }
}
