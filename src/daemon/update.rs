//! The daemon's side of `UpdateDeploymentAgent` (src/update): acknowledge (never a noop, as
//! v2), refuse at once when `update_policy` is off, otherwise stop polling and wait until no
//! other command is in flight, track the command, stage and verify the release, switch. The
//! result is recorded in the tracking files and reported once: here when nothing is switched
//! (up to date, refused, a failed download or check), else by the binary that runs once the
//! health check has decided (src/update/state.rs).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::agent::{Agent, Settled, Shutdown};
use super::tracking::OwedResult;
use crate::control::{Envelope, HostCommands, status};
use crate::update::command::Prepared;
use crate::update::state::{self, Restart};
use crate::update::{TRACKING_ID, UpdatePolicy};

impl<C: HostCommands + 'static> Agent<C> {
    /// Waits while an update is under way (no polls meanwhile). True when shutting down.
    pub(super) async fn wait_while_updating(
        &self,
        shutdown: &mut watch::Receiver<Shutdown>,
    ) -> bool {
        loop {
            let changed = self.commands_changed.notified();
            if !self.updating.load(Ordering::SeqCst) {
                return false;
            }
            // The watchdog keeps being pinged while polls are paused.
            self.beat();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                _ = shutdown.changed() => return true,
            }
        }
    }

    fn resume_polling(&self) {
        self.updating.store(false, Ordering::SeqCst);
        self.commands_changed.notify_waiters();
    }

    /// One `UpdateDeploymentAgent` command.
    pub(super) async fn process_update(
        self: &Arc<Self>,
        id: &str,
        stop: &watch::Receiver<Shutdown>,
    ) {
        let diagnostics = Envelope::json(r#"{"IsCommandNoop":false}"#.to_owned());
        let ack = self
            .settle("the acknowledgement", id, stop, || {
                self.client
                    .put_host_command_acknowledgement(id, Some(&diagnostics))
            })
            .await;
        match ack {
            Settled::Accepted(Some(s)) if s == status::SUCCEEDED || s == status::FAILED => {
                tracing::info!("the service says the update command is already {s}");
                return;
            }
            Settled::Accepted(_) => {}
            Settled::Rejected(e) => {
                self.report(id, &state::failure(&e.to_string()), stop).await;
                return;
            }
            Settled::Interrupted(_) => return,
        }
        let Some(updater) = self.updater.clone() else {
            let message = "this agent process cannot update itself (no updater configured)";
            self.report(id, &state::failure(message), stop).await;
            return;
        };
        if updater.settings.policy == UpdatePolicy::Off || updater.settings.source.is_none() {
            let e = updater.check_allowed().err().map(|e| e.to_string());
            let message = e.unwrap_or_default();
            tracing::warn!("{}: {message}", crate::update::COMMAND_NAME);
            self.report(id, &state::failure(&message), stop).await;
            return;
        }

        // Never while another command runs: no new polls, wait for the others to finish.
        self.updating.store(true, Ordering::SeqCst);
        let mut logged = false;
        loop {
            let changed = self.commands_changed.notified();
            if self.in_flight_count() <= 1 {
                break;
            }
            if !logged {
                tracing::info!(
                    running = self.in_flight_count() - 1,
                    "update deferred until the running commands finish; not polling meanwhile"
                );
                logged = true;
            }
            let mut stop = stop.clone();
            tokio::select! {
                () = changed => {}
                _ = stop.changed() => {
                    self.resume_polling();
                    return;
                }
            }
        }
        if let Err(e) = self.tracker.start(TRACKING_ID, id) {
            tracing::error!(error = %e, "cannot write the update's tracking file; updating anyway");
        }
        let outcome: OwedResult = match updater.prepare().await {
            Ok(Prepared::Current(why)) => {
                tracing::info!("{}: {why}", crate::update::COMMAND_NAME);
                state::success(&why)
            }
            Err(e) => {
                tracing::error!("{}: {e}", crate::update::COMMAND_NAME);
                state::failure(&e.to_string())
            }
            Ok(Prepared::Staged(staged)) => {
                let restart = updater.restart_mode();
                match updater.switch(&staged, Some(id), restart.clone()) {
                    Ok(()) => match restart {
                        Restart::Exec { args, .. } => {
                            tracing::info!(binary = %updater.binary.display(), "restarting into the new binary (exec)");
                            let e = state::exec(&updater.binary, &args);
                            let _ = crate::update::install::restore(&updater.binary);
                            let _ = std::fs::remove_file(&updater.state);
                            state::failure(&format!(
                                "cannot exec the new binary {}: {e}; the old binary is back",
                                updater.binary.display()
                            ))
                        }
                        // systemd restarts us (the watcher asked); polling stays paused.
                        _ => return,
                    },
                    Err(e) => {
                        tracing::error!("{}: {e}", crate::update::COMMAND_NAME);
                        state::failure(&e.to_string())
                    }
                }
            }
        };
        if let Err(e) = self.tracker.finish(TRACKING_ID, id, &outcome) {
            tracing::error!(error = %e, "cannot record the update's result before reporting it");
        }
        self.resume_polling();
        if self.report(id, &outcome, stop).await {
            self.tracker.accepted(TRACKING_ID, id);
        }
    }
}
