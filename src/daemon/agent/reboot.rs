//! Reboot and resume: a hook asks for a reboot through the file [`REBOOT_REQUEST_ENV`] names
//! (docs/operations.md, "Rebooting from a hook"). The agent reports nothing yet, records that
//! the command continues after the boot (`command_state`: Running → Rebooting), stops taking
//! commands, and runs `hook_reboot_command` (`systemctl reboot`). After the restart the
//! recovery continues the same command with the script after the one that asked and reports
//! its result once; past the lifecycle event's timeout (the sum of its script timeouts,
//! counted from the command's first start) it reports a failure instead.
//!
//! [`REBOOT_REQUEST_ENV`]: crate::deploy::hooks::REBOOT_REQUEST_ENV

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Agent, Shutdown};
use crate::control::{HostCommands, status};
use crate::daemon::tracking::{OwedResult, Resume};
use crate::deploy::executor::{CommandFailure, RebootRequest};
use crate::spec::DeploymentSpec;

/// How long the reboot command may take to return.
const REBOOT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Seconds since the epoch.
pub(super) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn failed(message: String) -> OwedResult {
    OwedResult {
        status: status::FAILED.into(),
        payload: CommandFailure::unknown(message).payload_json(),
    }
}

/// Runs `command` through `/bin/sh -c`; `Err` says why it did not start a reboot.
async fn run_reboot_command(command: &str) -> Result<(), String> {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(REBOOT_COMMAND_TIMEOUT, child).await {
        Err(_) => Err(format!(
            "it did not return within {} s",
            REBOOT_COMMAND_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("it could not be started: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "it exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl<C: HostCommands + 'static> Agent<C> {
    /// A script of `reboot.at.event` asked for a reboot. `None`: the reboot is under way and
    /// the command is reported after the boot; `Some`: the reboot could not be started, and
    /// the command fails with that result.
    pub(super) async fn reboot_for(
        &self,
        id: &str,
        name: &str,
        execution: &str,
        spec: &DeploymentSpec,
        reboot: &RebootRequest,
        deadline: u64,
    ) -> Option<OwedResult> {
        let command = self.engine.settings.reboot_command.clone();
        let resume = Resume {
            host_command_id: id.to_owned(),
            command_name: name.to_owned(),
            deployment_execution_id: execution.to_owned(),
            event: reboot.at.event.clone(),
            next_script: reboot.at.next_script,
            deadline,
        };
        if let Err(e) = self.tracker.reboot(&spec.deployment_id, &resume) {
            tracing::error!(error = %e, "cannot record that the command continues after the reboot");
            return Some(failed(format!(
                "A script of {} asked for a reboot, but the agent cannot record that the command \
                 continues after it ({e}); not rebooting",
                reboot.at.event
            )));
        }
        self.reboot_pending.store(true, Ordering::SeqCst);
        tracing::warn!(
            event = %reboot.at.event,
            next_script = reboot.at.next_script + 1,
            "a script asked for a reboot: running `{command}`; the command continues after the boot"
        );
        match run_reboot_command(&command).await {
            Ok(()) => None,
            Err(why) => {
                self.reboot_pending.store(false, Ordering::SeqCst);
                if let Err(e) = self.tracker.resumed(&spec.deployment_id) {
                    tracing::error!(error = %e, "cannot remove the resume file");
                }
                let message = format!(
                    "A script of {} asked for a reboot, and the reboot command `{command}` \
                     failed: {why}",
                    reboot.at.event
                );
                tracing::error!("{message}");
                Some(failed(message))
            }
        }
    }

    /// Recovery of a command that continues after a reboot: the rest of it runs and its result
    /// is reported once, or a failure when the deadline has passed or the specification cannot
    /// be had.
    #[tracing::instrument(skip_all, fields(host_command_id = %resume.host_command_id, command = %resume.command_name, deployment_id = %deployment_id))]
    pub(super) async fn resume_after_reboot(
        self: &Arc<Self>,
        deployment_id: &str,
        resume: Resume,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let id = resume.host_command_id.clone();
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        self.observed.begin(&id, &resume.command_name);
        self.resume_inner(deployment_id, &resume, stop).await;
        self.observed.dropped(&id);
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    async fn resume_inner(
        self: &Arc<Self>,
        deployment_id: &str,
        resume: &Resume,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let id = &resume.host_command_id;
        let give_up = |message: String| async move {
            tracing::error!("{message}");
            if let Err(e) = self.tracker.resumed(deployment_id) {
                tracing::error!(error = %e, "cannot remove the resume file");
            }
            self.finish_and_report(deployment_id, id, &failed(message), stop)
                .await;
        };
        let now = unix_seconds(SystemTime::now());
        if now > resume.deadline {
            give_up(format!(
                "The instance did not come back from the reboot a script of {} asked for within \
                 the lifecycle event's timeout (the deadline passed {} s ago)",
                resume.event,
                now - resume.deadline
            ))
            .await;
            return;
        }
        let spec = match self.fetch_spec(&resume.deployment_execution_id).await {
            Ok(spec) if spec.deployment_id == deployment_id => spec,
            Ok(spec) => {
                give_up(format!(
                    "Cannot continue after the reboot: the specification is of deployment {}, not \
                     {deployment_id}",
                    spec.deployment_id
                ))
                .await;
                return;
            }
            Err(message) => {
                give_up(format!(
                    "Cannot continue after the reboot: the deployment specification could not be \
                     fetched again: {message}"
                ))
                .await;
                return;
            }
        };
        self.observed
            .deployment(id, &spec.deployment_id, &spec.deployment_group_id);
        let lock = self.group_lock(&spec.deployment_group_id);
        let _serialised = lock.lock().await;
        if let Err(e) = self.tracker.resumed(deployment_id) {
            tracing::error!(error = %e, "cannot remove the resume file; continuing anyway");
        }
        tracing::info!(
            "continuing {} with script {} after the reboot",
            resume.event,
            resume.next_script + 1
        );
        self.execute_and_report(
            id,
            &resume.command_name,
            &resume.deployment_execution_id,
            &spec,
            Some(resume),
            stop,
        )
        .await;
    }
}
