//! Follow a deployment until it ends: every interval, GetDeployment (status, overview, error)
//! and ListDeploymentTargets + BatchGetDeploymentTargets (each target's lifecycle events);
//! print only what changed. A failed lifecycle event prints the diagnostics the service
//! holds: script, error code, message and log tail. Ctrl-C stops following (exit 130), or,
//! with `--stop-on-interrupt`, calls StopDeployment and follows until the deployment stops.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_codedeploy::types::{DeploymentTarget, LifecycleEvent};
use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_DEPLOYMENT_FAILED, EXIT_INTERRUPTED, EXIT_SUCCEEDED, PushError, describe};

/// BatchGetDeploymentTargets takes at most this many ids.
const BATCH: usize = 25;
/// Polls that may fail in a row (after the SDK's own retries) before we give up.
const MAX_FAILED_POLLS: u32 = 5;

/// How to follow.
#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    pub stop_on_interrupt: bool,
}

/// One look at a deployment, in plain values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub status: String,
    /// (pending, in progress, succeeded, failed, skipped, ready)
    pub overview: Option<[i64; 6]>,
    pub error: Option<(String, String)>,
    pub messages: Vec<String>,
    pub targets: Vec<Target>,
}

/// One instance (or Lambda function, ECS service, CloudFormation stack) of a deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub id: String,
    /// Blue or Green in blue/green deployments.
    pub label: Option<String>,
    pub status: String,
    pub events: Vec<Event>,
}

/// One lifecycle event of a target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub name: String,
    pub status: String,
    /// Seconds it took, once it has ended.
    pub duration: Option<f64>,
    pub diagnostics: Option<Diagnostics>,
}

/// What the agent reported about a failed event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics {
    pub error_code: Option<String>,
    pub script_name: Option<String>,
    pub message: Option<String>,
    pub log_tail: Option<String>,
}

impl Snapshot {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "Succeeded" | "Failed" | "Stopped")
    }
}

/// What has been printed so far; [`Tracker::update`] returns the lines for what changed.
#[derive(Debug, Default)]
pub struct Tracker {
    deployment: Option<String>,
    messages: usize,
    targets: HashMap<String, (String, HashMap<String, String>)>,
}

impl Tracker {
    pub fn update(&mut self, id: &str, s: &Snapshot) -> Vec<String> {
        let mut lines = Vec::new();
        let headline = match s.overview {
            Some([pending, in_progress, succeeded, failed, skipped, ready]) => {
                let mut line = format!(
                    "{id}: {} ({pending} pending, {in_progress} in progress, {succeeded} \
                     succeeded, {failed} failed, {skipped} skipped",
                    s.status
                );
                if ready > 0 {
                    line.push_str(&format!(", {ready} ready"));
                }
                line.push(')');
                line
            }
            None => format!("{id}: {}", s.status),
        };
        for m in s.messages.iter().skip(self.messages) {
            lines.push(format!("{id}: {m}"));
        }
        self.messages = self.messages.max(s.messages.len());
        for t in &s.targets {
            let name = match &t.label {
                Some(label) => format!("{} [{label}]", t.id),
                None => t.id.clone(),
            };
            let (status, events) = self
                .targets
                .entry(t.id.clone())
                .or_insert_with(|| (String::new(), HashMap::new()));
            for e in &t.events {
                let seen = events.get(&e.name).map(String::as_str);
                // Every event starts Pending: say nothing until it moves.
                if seen == Some(e.status.as_str()) || (seen.is_none() && e.status == "Pending") {
                    continue;
                }
                events.insert(e.name.clone(), e.status.clone());
                let took = e
                    .duration
                    .filter(|_| e.status != "InProgress")
                    .map_or(String::new(), |d| format!(" ({d:.1} s)"));
                lines.push(format!("{name} {}: {}{took}", e.name, e.status));
                if e.status == "Failed"
                    && let Some(d) = &e.diagnostics
                {
                    lines.extend(render_diagnostics(d));
                }
            }
            if *status != t.status {
                *status = t.status.clone();
                lines.push(format!("{name}: {}", t.status));
            }
        }
        if self.deployment.as_deref() != Some(headline.as_str()) {
            lines.push(headline.clone());
            self.deployment = Some(headline);
        }
        if s.is_done()
            && let Some((code, message)) = &s.error
        {
            lines.push(format!("{id}: {code}: {message}"));
        }
        lines
    }
}

fn render_diagnostics(d: &Diagnostics) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(script) = &d.script_name {
        lines.push(format!("    script:   {script}"));
    }
    if let Some(code) = &d.error_code {
        lines.push(format!("    error:    {code}"));
    }
    if let Some(message) = &d.message {
        lines.push(format!("    message:  {}", terminal_safe(message)));
    }
    if let Some(tail) = d.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        lines.push("    log tail:".into());
        let tail = terminal_safe(tail);
        lines.extend(tail.trim_end().lines().map(|l| format!("      {l}")));
    }
    lines
}

/// Script output as the service reports it, made safe to print: escape sequences removed (as
/// the agent strips them from scripts.log), other control characters but tab and newline
/// shown as `?`, so a log tail cannot move the cursor, retitle or clear the operator's terminal.
fn terminal_safe(text: &str) -> String {
    let stripped = crate::deploy::hooks::strip_ansi(text.as_bytes());
    String::from_utf8_lossy(&stripped)
        .chars()
        .filter(|&c| c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Follows deployment `id` until it ends; returns the exit code.
pub async fn run(
    client: &aws_sdk_codedeploy::Client,
    id: &str,
    options: &Options,
) -> Result<u8, PushError> {
    let mut interrupts = signal(SignalKind::interrupt())
        .map_err(|e| PushError::Aws(format!("cannot watch for Ctrl-C: {e}")))?;
    if options.stop_on_interrupt {
        crate::outln!("Following {id} (Ctrl-C stops the deployment)");
    } else {
        crate::outln!("Following {id} (Ctrl-C stops following; the deployment continues)");
    }
    let mut tracker = Tracker::default();
    let mut finished = HashMap::new();
    let mut failed_polls = 0;
    let mut stopping = false;
    loop {
        // Ctrl-C is noticed while a poll is in flight too (the SDK retries a slow API).
        let polled = tokio::select! {
            r = poll(client, id, &mut finished) => Some(r),
            _ = interrupts.recv() => None,
        };
        match polled {
            Some(Ok(snapshot)) => {
                failed_polls = 0;
                for line in tracker.update(id, &snapshot) {
                    crate::outln!("{line}");
                }
                if snapshot.is_done() {
                    return Ok(if snapshot.status == "Succeeded" {
                        crate::outln!("Deployment {id} succeeded");
                        EXIT_SUCCEEDED
                    } else {
                        crate::outln!("Deployment {id} {}", snapshot.status.to_lowercase());
                        EXIT_DEPLOYMENT_FAILED
                    });
                }
            }
            Some(Err(message)) => {
                failed_polls += 1;
                if failed_polls >= MAX_FAILED_POLLS {
                    return Err(PushError::Aws(format!(
                        "following deployment {id} failed {failed_polls} times in a row, last: \
                         {message}. The deployment itself is not affected; check on it with \
                         `aws deploy get-deployment --deployment-id {id}`"
                    )));
                }
                crate::errln!("codedeploy-agent deploy: {message} (will retry)");
            }
            None => {
                if let Some(code) = interrupted(client, id, options, &mut stopping).await? {
                    return Ok(code);
                }
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(options.interval) => {}
            _ = interrupts.recv() => {
                if let Some(code) = interrupted(client, id, options, &mut stopping).await? {
                    return Ok(code);
                }
            }
        }
    }
}

/// Ctrl-C: the first one with `--stop-on-interrupt` stops the deployment and following goes
/// on (`None`); otherwise following ends (`Some(exit code)`).
async fn interrupted(
    client: &aws_sdk_codedeploy::Client,
    id: &str,
    options: &Options,
    stopping: &mut bool,
) -> Result<Option<u8>, PushError> {
    if options.stop_on_interrupt && !*stopping {
        *stopping = true;
        client
            .stop_deployment()
            .deployment_id(id)
            .send()
            .await
            .map_err(|e| {
                PushError::Aws(format!("StopDeployment for {id} failed: {}", describe(&e)))
            })?;
        crate::outln!(
            "Interrupted: stopping deployment {id}, following until it stops \
             (Ctrl-C again stops following)"
        );
        Ok(None)
    } else {
        crate::outln!(
            "Interrupted: stopped following {id}; the deployment itself was not \
             stopped and continues. Check on it with `aws deploy get-deployment \
             --deployment-id {id}`"
        );
        Ok(Some(EXIT_INTERRUPTED))
    }
}

/// Target statuses that do not change any more.
fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Skipped")
}

/// One look: the deployment, then the targets; only those not in `finished` are fetched, and
/// those that finish are added to it.
async fn poll(
    client: &aws_sdk_codedeploy::Client,
    id: &str,
    finished: &mut HashMap<String, Target>,
) -> Result<Snapshot, String> {
    let out = client
        .get_deployment()
        .deployment_id(id)
        .send()
        .await
        .map_err(|e| format!("GetDeployment {id}: {}", describe(&e)))?;
    let info = out
        .deployment_info()
        .ok_or_else(|| format!("GetDeployment {id} returned no deploymentInfo"))?;
    let mut snapshot = Snapshot {
        status: info
            .status()
            .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
        overview: info.deployment_overview().map(|o| {
            [
                o.pending(),
                o.in_progress(),
                o.succeeded(),
                o.failed(),
                o.skipped(),
                o.ready(),
            ]
        }),
        error: info.error_information().map(|e| {
            (
                e.code().map_or("", |c| c.as_str()).to_owned(),
                e.message().unwrap_or_default().to_owned(),
            )
        }),
        messages: info.deployment_status_messages().to_vec(),
        targets: Vec::new(),
    };

    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_deployment_targets()
            .deployment_id(id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("ListDeploymentTargets {id}: {}", describe(&e)))?;
        ids.extend(page.target_ids().iter().cloned());
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let (done, open): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|t| finished.contains_key(t));
    snapshot
        .targets
        .extend(done.iter().filter_map(|t| finished.get(t).cloned()));
    for chunk in open.chunks(BATCH) {
        let out = client
            .batch_get_deployment_targets()
            .deployment_id(id)
            .set_target_ids(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| format!("BatchGetDeploymentTargets {id}: {}", describe(&e)))?;
        for t in out.deployment_targets().iter().filter_map(target) {
            if is_final(&t.status) {
                finished.insert(t.id.clone(), t.clone());
            }
            snapshot.targets.push(t);
        }
    }
    Ok(snapshot)
}

fn target(t: &DeploymentTarget) -> Option<Target> {
    let (id, label, status, events) = if let Some(i) = t.instance_target() {
        (
            i.target_id(),
            i.instance_label().map(|l| l.as_str().to_owned()),
            i.status(),
            i.lifecycle_events(),
        )
    } else if let Some(l) = t.lambda_target() {
        (l.target_id(), None, l.status(), l.lifecycle_events())
    } else if let Some(e) = t.ecs_target() {
        (e.target_id(), None, e.status(), e.lifecycle_events())
    } else if let Some(c) = t.cloud_formation_target() {
        (c.target_id(), None, c.status(), c.lifecycle_events())
    } else {
        return None;
    };
    Some(Target {
        id: id.unwrap_or("(unnamed target)").to_owned(),
        label,
        status: status.map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
        events: events.iter().map(event).collect(),
    })
}

fn event(e: &LifecycleEvent) -> Event {
    let duration = match (e.start_time(), e.end_time()) {
        (Some(start), Some(end)) => Some((end.as_secs_f64() - start.as_secs_f64()).max(0.0)),
        _ => None,
    };
    Event {
        name: e.lifecycle_event_name().unwrap_or_default().to_owned(),
        status: e
            .status()
            .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
        duration,
        diagnostics: e.diagnostics().map(|d| Diagnostics {
            error_code: d.error_code().map(|c| c.as_str().to_owned()),
            script_name: d.script_name().filter(|s| !s.is_empty()).map(str::to_owned),
            message: d.message().filter(|s| !s.is_empty()).map(str::to_owned),
            log_tail: d.log_tail().map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_cannot_drive_the_terminal() {
        assert_eq!(
            terminal_safe("\x1b[31mred\x1b[0m\r\n\x1b]0;title\x07ok\tdone\x08\n"),
            "red\nok\tdone?\n"
        );
    }

    fn ev(name: &str, status: &str, duration: Option<f64>) -> Event {
        Event {
            name: name.into(),
            status: status.into(),
            duration,
            diagnostics: None,
        }
    }

    fn snapshot(status: &str, target_status: &str, events: Vec<Event>) -> Snapshot {
        Snapshot {
            status: status.into(),
            overview: Some([0, 1, 0, 0, 0, 0]),
            targets: vec![Target {
                id: "i-1".into(),
                label: None,
                status: target_status.into(),
                events,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn prints_only_changes() {
        let mut t = Tracker::default();
        let first = t.update(
            "d-1",
            &snapshot(
                "InProgress",
                "InProgress",
                vec![
                    ev("ApplicationStop", "Succeeded", Some(0.25)),
                    ev("DownloadBundle", "InProgress", None),
                    ev("Install", "Pending", None),
                ],
            ),
        );
        assert_eq!(
            first,
            [
                "i-1 ApplicationStop: Succeeded (0.2 s)",
                "i-1 DownloadBundle: InProgress",
                "i-1: InProgress",
                "d-1: InProgress (0 pending, 1 in progress, 0 succeeded, 0 failed, 0 skipped)",
            ]
        );
        let same = t.update(
            "d-1",
            &snapshot(
                "InProgress",
                "InProgress",
                vec![
                    ev("ApplicationStop", "Succeeded", Some(0.25)),
                    ev("DownloadBundle", "InProgress", None),
                    ev("Install", "Pending", None),
                ],
            ),
        );
        assert!(same.is_empty(), "{same:?}");
        let next = t.update(
            "d-1",
            &snapshot(
                "InProgress",
                "InProgress",
                vec![
                    ev("ApplicationStop", "Succeeded", Some(0.25)),
                    ev("DownloadBundle", "Succeeded", Some(1.0)),
                    ev("Install", "InProgress", None),
                ],
            ),
        );
        assert_eq!(
            next,
            [
                "i-1 DownloadBundle: Succeeded (1.0 s)",
                "i-1 Install: InProgress"
            ]
        );
    }

    #[test]
    fn failed_event_prints_its_diagnostics_and_the_deployment_error() {
        let mut t = Tracker::default();
        let mut failed = ev("AfterInstall", "Failed", Some(3.0));
        failed.diagnostics = Some(Diagnostics {
            error_code: Some("ScriptFailed".into()),
            script_name: Some("scripts/after.sh".into()),
            message: Some("Script at specified location: scripts/after.sh run as user root failed with exit code 1".into()),
            log_tail: Some("[stdout]one\n[stderr]two\n".into()),
        });
        let mut s = snapshot("Failed", "Failed", vec![failed]);
        s.overview = Some([0, 0, 0, 1, 0, 0]);
        s.error = Some(("HEALTH_CONSTRAINTS".into(), "too many failed".into()));
        assert_eq!(
            t.update("d-1", &s),
            [
                "i-1 AfterInstall: Failed (3.0 s)",
                "    script:   scripts/after.sh",
                "    error:    ScriptFailed",
                "    message:  Script at specified location: scripts/after.sh run as user root failed with exit code 1",
                "    log tail:",
                "      [stdout]one",
                "      [stderr]two",
                "i-1: Failed",
                "d-1: Failed (0 pending, 0 in progress, 0 succeeded, 1 failed, 0 skipped)",
                "d-1: HEALTH_CONSTRAINTS: too many failed",
            ]
        );
    }
}
