//! The on-disk life of one acknowledged host command (agent-behaviour.md §4.3), as a small
//! state machine whose every transition is ordered so that a kill at any instant leaves a
//! state the next start resolves to exactly one final report.
//!
//! Files, in the tracking directory `<root>/<ongoing-deployment>/`:
//! - `<DeploymentId>`: the HostCommandIdentifier of the command running or owed, exactly as
//!   the AWS agent writes it (tools that look for it keep working).
//! - `<DeploymentId>.result`: JSON `{"HostCommandIdentifier", "CommandStatus", "Payload"}`, the
//!   final result of that command, written before the service is told.
//!
//! States of the command `h` of deployment `d` (T: the tracking file holds `h`; R: the result
//! file holds `h`):
//!
//! | state | files | the next start |
//! | --- | --- | --- |
//! | `Idle` | neither (or files of another command) | nothing to do for `h` |
//! | `Running` | T | reports `Failed`, code 7 |
//! | `Finished` | T and R | reports R |
//! | `Accepting` | R only | nothing (already accepted): deletes R |
//! | `Rebooting` | T and S (no R) | continues the command after the reboot a hook asked for |
//!
//! S is `<DeploymentId>.resume` (JSON [`Resume`]: the command, its event, the next script and
//! the deadline). `reboot` (Running → Rebooting, pause point `state-rebooting`) writes S before
//! the reboot is started; after the boot `resumed` (Rebooting → Running, `state-resumed`)
//! removes S, then the rest of the command runs and ends in `finish` as any command does. A
//! kill while Rebooting continues the command at the next start; a kill after `resumed` is
//! the kill of a running command (code 7). Past S's deadline the command is reported failed
//! instead of continued.
//!
//! Transitions, each a [`test_pause_point`](crate::test_pause::test_pause_point) after its
//! last write (`state-running`, `state-finished`, `state-accepting`, `state-idle`):
//! - `start` (Idle → Running): remove an orphan R of `d` (a left-over `Accepting`), then
//!   write T (temp file, fsync, rename, directory fsync).
//! - `finish` (Running → Finished): write R atomically the same way.
//! - `accepted` (Finished → Accepting → Idle), after the service accepted or definitively
//!   rejected the report: remove T first, then R; each only while it still names `h`, so a
//!   late acceptance never removes the files of the next command of the same deployment.
//!
//! The tracking file is removed *before* the result: the one state with a result and no
//! tracking file means "accepted", never "cut off". A kill after the service applied a
//! report but before the agent heard back leaves `Finished`, and the same result is sent
//! again (the service sees one result, twice; the only window the agent cannot close alone).
//! Recovery holds the deployments it owes: a new command of such a deployment waits until
//! its owed report is settled (`Agent::recover`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::deploy::layout::write_atomic;
use crate::test_pause::test_pause_point;

/// The suffix of a `Rebooting` command's resume file.
const RESUME_SUFFIX: &str = ".resume";

/// Tracking files older than this are stale and deleted without a report (§4.3).
pub const STALE_AFTER: Duration = Duration::from_secs(86_400);

/// The payload of the code-7 failure sent for a command cut off by a restart.
pub const FAILED_AFTER_RESTART_PAYLOAD: &str = r#"{"error_code":7,"script_name":"","message":"Failed: Failing in-progress lifecycle event after an agent restart.","log":""}"#;

/// A final result waiting to be accepted by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedResult {
    #[serde(rename = "CommandStatus")]
    pub status: String,
    #[serde(rename = "Payload")]
    pub payload: String,
}

/// What the result file holds: the result and whose it is.
#[derive(Debug, Serialize, Deserialize)]
struct ResultFile {
    #[serde(rename = "HostCommandIdentifier", default)]
    host_command_id: String,
    #[serde(flatten)]
    result: OwedResult,
}

/// What `<DeploymentId>.resume` holds: a command that continues after the reboot one of its
/// hooks asked for. No secret is kept: the specification is fetched again after the boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    #[serde(rename = "HostCommandIdentifier")]
    pub host_command_id: String,
    #[serde(rename = "CommandName")]
    pub command_name: String,
    #[serde(rename = "DeploymentExecutionId")]
    pub deployment_execution_id: String,
    #[serde(rename = "LifecycleEvent")]
    pub event: String,
    /// The index of the script to run first (the one after the script that asked).
    #[serde(rename = "NextScript")]
    pub next_script: usize,
    /// Seconds since the epoch after which the command is reported as failed instead.
    #[serde(rename = "Deadline")]
    pub deadline: u64,
}

/// One command the agent owes a final report for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub deployment_id: String,
    pub host_command_id: String,
    /// `None`: the command was running when the agent stopped.
    pub result: Option<OwedResult>,
    /// With no result: the command continues after a reboot (`Rebooting`).
    pub resume: Option<Resume>,
    pub modified: SystemTime,
}

/// The tracking directory.
#[derive(Debug, Clone)]
pub struct Tracker {
    dir: PathBuf,
}

impl Tracker {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, deployment_id: &str) -> PathBuf {
        self.dir.join(deployment_id)
    }

    fn result_file(&self, deployment_id: &str) -> PathBuf {
        self.dir.join(format!("{deployment_id}.result"))
    }

    fn resume_file(&self, deployment_id: &str) -> PathBuf {
        self.dir.join(format!("{deployment_id}{RESUME_SUFFIX}"))
    }

    /// The resume file of `deployment_id`, when it is `host_command_id`'s.
    fn resume_of(&self, deployment_id: &str, host_command_id: &str) -> Option<Resume> {
        fs::read(self.resume_file(deployment_id))
            .ok()
            .and_then(|b| serde_json::from_slice::<Resume>(&b).ok())
            .filter(|r| r.host_command_id == host_command_id)
    }

    /// Running → Rebooting: `resume.host_command_id` continues after the reboot one of its
    /// hooks asked for. Written before the reboot is started.
    pub fn reboot(&self, deployment_id: &str, resume: &Resume) -> io::Result<()> {
        let json = serde_json::to_vec(resume).map_err(io::Error::other)?;
        write_atomic(&self.resume_file(deployment_id), &json)?;
        test_pause_point("state-rebooting");
        Ok(())
    }

    /// Rebooting → Running: the command continues now (or is given up); a kill from here on
    /// is a kill of a running command.
    pub fn resumed(&self, deployment_id: &str) -> io::Result<()> {
        match fs::remove_file(self.resume_file(deployment_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::File::open(&self.dir)?.sync_all()?;
        test_pause_point("state-resumed");
        Ok(())
    }

    /// The host command id the tracking file of `deployment_id` names.
    fn tracked(&self, deployment_id: &str) -> Option<String> {
        fs::read_to_string(self.file(deployment_id))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The result file of `deployment_id`: whose it is and what it says.
    fn recorded(&self, deployment_id: &str) -> Option<ResultFile> {
        fs::read(self.result_file(deployment_id))
            .ok()
            .and_then(|b| serde_json::from_slice::<ResultFile>(&b).ok())
    }

    /// Idle → Running: `host_command_id` of `deployment_id` is about to run.
    pub fn start(&self, deployment_id: &str, host_command_id: &str) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        match fs::remove_file(self.result_file(deployment_id)) {
            Ok(()) => {
                tracing::info!(
                    deployment_id,
                    "removed the result of an earlier command whose report was accepted"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.resume_file(deployment_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        write_atomic(&self.file(deployment_id), host_command_id.as_bytes())?;
        test_pause_point("state-running");
        Ok(())
    }

    /// Running → Finished: records the final result before it is sent.
    pub fn finish(
        &self,
        deployment_id: &str,
        host_command_id: &str,
        result: &OwedResult,
    ) -> io::Result<()> {
        let json = serde_json::to_vec(&ResultFile {
            host_command_id: host_command_id.to_owned(),
            result: result.clone(),
        })
        .map_err(io::Error::other)?;
        write_atomic(&self.result_file(deployment_id), &json)?;
        test_pause_point("state-finished");
        Ok(())
    }

    /// Finished → Accepting → Idle: forgets `host_command_id`, whose final report the service
    /// accepted (or definitively rejected). The tracking file goes first, then the result;
    /// neither is touched once it names another command.
    pub fn accepted(&self, deployment_id: &str, host_command_id: &str) {
        match self.tracked(deployment_id) {
            Some(id) if id == host_command_id => {
                if let Err(e) = fs::remove_file(self.file(deployment_id)) {
                    tracing::warn!(deployment_id, error = %e, "cannot remove the tracking file");
                }
            }
            Some(other) => {
                tracing::info!(
                    deployment_id,
                    host_command_id,
                    tracking = %other,
                    "the tracking file already names the next command; leaving it"
                );
            }
            None => tracing::warn!(deployment_id, "the tracking file does not exist"),
        }
        test_pause_point("state-accepting");
        if self.resume_of(deployment_id, host_command_id).is_some() {
            let _ = fs::remove_file(self.resume_file(deployment_id));
        }
        if self
            .recorded(deployment_id)
            .is_some_and(|r| r.host_command_id == host_command_id || r.host_command_id.is_empty())
        {
            let _ = fs::remove_file(self.result_file(deployment_id));
        }
        test_pause_point("state-idle");
    }

    /// True when some command is in flight (a tracking file younger than a day, no result).
    pub fn in_progress(&self) -> bool {
        self.owed()
            .is_ok_and(|o| o.iter().any(|o| o.result.is_none()))
    }

    /// Everything still owed, newest first. Stale files (older than a day) are deleted, and
    /// so is a result with no tracking file (`Accepting`: the report was accepted).
    pub fn owed(&self) -> io::Result<Vec<Owed>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        let mut owed = Vec::new();
        let mut orphans = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(deployment_id) = name
                .strip_suffix(".result")
                .or_else(|| name.strip_suffix(RESUME_SUFFIX))
            {
                if !self.file(deployment_id).exists() {
                    orphans.push(entry.path());
                }
                continue;
            }
            let path = entry.path();
            let modified = entry.metadata()?.modified()?;
            if now.duration_since(modified).unwrap_or_default() > STALE_AFTER {
                tracing::info!(file = %path.display(), "deleting a stale deployment tracking file");
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(self.result_file(&name));
                let _ = fs::remove_file(self.resume_file(&name));
                continue;
            }
            let host_command_id = fs::read_to_string(&path)?.trim().to_owned();
            if host_command_id.is_empty() {
                let _ = fs::remove_file(&path);
                continue;
            }
            // A result counts only when it is this command's (an old file without an id is
            // taken as this command's, as it was written).
            let result = self
                .recorded(&name)
                .filter(|r| r.host_command_id.is_empty() || r.host_command_id == host_command_id)
                .map(|r| r.result);
            let resume = result
                .is_none()
                .then(|| self.resume_of(&name, &host_command_id))
                .flatten();
            owed.push(Owed {
                deployment_id: name,
                host_command_id,
                result,
                resume,
                modified,
            });
        }
        for path in orphans {
            // Re-checked: a command may have started since the listing.
            let tracked = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| {
                    n.strip_suffix(".result")
                        .or_else(|| n.strip_suffix(RESUME_SUFFIX))
                })
                .is_some_and(|d| self.file(d).exists());
            if !tracked {
                tracing::info!(file = %path.display(), "removing the result of a report the service already accepted");
                let _ = fs::remove_file(&path);
            }
        }
        owed.sort_by_key(|o| std::cmp::Reverse(o.modified));
        Ok(owed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_of_a_tracked_command() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Tracker::new(tmp.path().join("ongoing-deployment"));
        assert!(!t.in_progress());
        t.start("d-1", "hc-1").expect("start");
        // Exactly what the AWS agent writes: the id, no newline.
        assert_eq!(
            fs::read_to_string(tmp.path().join("ongoing-deployment/d-1")).expect("read"),
            "hc-1"
        );
        assert!(t.in_progress());
        let owed = t.owed().expect("owed");
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].result, None);

        let result = OwedResult {
            status: "Succeeded".into(),
            payload: "{}".into(),
        };
        t.finish("d-1", "hc-1", &result).expect("finish");
        assert!(
            !t.in_progress(),
            "a finished command is owed a report, not running"
        );
        assert_eq!(t.owed().expect("owed")[0].result.as_ref(), Some(&result));
        t.accepted("d-1", "hc-1");
        assert!(t.owed().expect("owed").is_empty());
    }

    #[test]
    fn stale_files_are_deleted_silently() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Tracker::new(tmp.path());
        t.start("d-old", "hc-old").expect("start");
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        fs::File::open(tmp.path().join("d-old"))
            .expect("open")
            .set_modified(old)
            .expect("mtime");
        t.start("d-new", "hc-new").expect("start");
        let owed = t.owed().expect("owed");
        assert_eq!(
            owed.iter()
                .map(|o| o.host_command_id.as_str())
                .collect::<Vec<_>>(),
            ["hc-new"]
        );
        assert!(!tmp.path().join("d-old").exists());
    }

    fn succeeded() -> OwedResult {
        OwedResult {
            status: "Succeeded".into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn a_result_without_a_tracking_file_is_accepted_not_owed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Tracker::new(tmp.path());
        t.start("d-1", "hc-1").expect("start");
        t.finish("d-1", "hc-1", &succeeded()).expect("finish");
        // A kill between the two removals of `accepted`: the tracking file went first.
        fs::remove_file(tmp.path().join("d-1")).expect("rm");
        assert!(t.owed().expect("owed").is_empty(), "nothing is owed");
        assert!(
            !tmp.path().join("d-1.result").exists(),
            "and the orphan is gone"
        );
    }

    #[test]
    fn a_late_acceptance_leaves_the_next_command_of_the_deployment_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Tracker::new(tmp.path());
        t.start("d-1", "hc-A").expect("start");
        t.finish("d-1", "hc-A", &succeeded()).expect("finish");
        t.start("d-1", "hc-B").expect("start B");
        t.accepted("d-1", "hc-A");
        let owed = t.owed().expect("owed");
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].host_command_id, "hc-B");
        assert_eq!(owed[0].result, None, "B is running, A's result is not B's");
        t.finish("d-1", "hc-B", &succeeded()).expect("finish B");
        t.accepted("d-1", "hc-A");
        assert_eq!(t.owed().expect("owed")[0].result, Some(succeeded()));
        t.accepted("d-1", "hc-B");
        assert!(t.owed().expect("owed").is_empty());
        assert!(fs::read_dir(tmp.path()).expect("dir").next().is_none());
    }

    #[test]
    fn a_result_of_another_command_is_not_this_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Tracker::new(tmp.path());
        t.start("d-1", "hc-B").expect("start");
        fs::write(
            tmp.path().join("d-1.result"),
            r#"{"HostCommandIdentifier":"hc-A","CommandStatus":"Succeeded","Payload":"{}"}"#,
        )
        .expect("write");
        assert_eq!(t.owed().expect("owed")[0].result, None);
        // A result file from before the id was recorded counts as the tracked command's.
        fs::write(
            tmp.path().join("d-1.result"),
            r#"{"CommandStatus":"Succeeded","Payload":"{}"}"#,
        )
        .expect("write");
        assert_eq!(t.owed().expect("owed")[0].result, Some(succeeded()));
    }
}
