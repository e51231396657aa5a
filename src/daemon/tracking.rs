//! In-flight command tracking (agent-behaviour.md §4.3), made crash-safe.
//!
//! Before a command runs, `<root>/<ongoing-deployment>/<DeploymentId>` is written (atomically)
//! with the HostCommandIdentifier, exactly as the AWS agent writes it, so tools that look for it
//! keep working. When the command has finished, its result is written next to it as
//! `<DeploymentId>.result` (JSON: status and diagnostics payload) *before* the service is told,
//! and both files are removed only once `PutHostCommandComplete` has been accepted. After a
//! crash or kill, the next start therefore knows exactly what is still owed to the service:
//! the recorded result, or, when the command was cut off while running, a failure with code 7.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::deploy::layout::write_atomic;

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

/// One command the agent owes a final report for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub deployment_id: String,
    pub host_command_id: String,
    /// `None`: the command was running when the agent stopped.
    pub result: Option<OwedResult>,
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

    /// Records that `host_command_id` of `deployment_id` is about to run.
    pub fn start(&self, deployment_id: &str, host_command_id: &str) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let _ = fs::remove_file(self.result_file(deployment_id));
        write_atomic(&self.file(deployment_id), host_command_id.as_bytes())
    }

    /// Records the final result before it is sent.
    pub fn finish(&self, deployment_id: &str, result: &OwedResult) -> io::Result<()> {
        let json = serde_json::to_vec(result).map_err(io::Error::other)?;
        write_atomic(&self.result_file(deployment_id), &json)
    }

    /// Forgets a command whose final report the service accepted.
    pub fn accepted(&self, deployment_id: &str) {
        let _ = fs::remove_file(self.result_file(deployment_id));
        if let Err(e) = fs::remove_file(self.file(deployment_id))
            && e.kind() == io::ErrorKind::NotFound
        {
            tracing::warn!(deployment_id, "the tracking file does not exist");
        }
    }

    /// True when some command is in flight (a tracking file younger than a day).
    pub fn in_progress(&self) -> bool {
        self.owed()
            .is_ok_and(|o| o.iter().any(|o| o.result.is_none()))
    }

    /// Everything still owed, newest first. Stale files (older than a day) are deleted.
    pub fn owed(&self) -> io::Result<Vec<Owed>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        let mut owed = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".result") || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let modified = entry.metadata()?.modified()?;
            if now.duration_since(modified).unwrap_or_default() > STALE_AFTER {
                tracing::info!(file = %path.display(), "deleting a stale deployment tracking file");
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(self.result_file(&name));
                continue;
            }
            let host_command_id = fs::read_to_string(&path)?.trim().to_owned();
            if host_command_id.is_empty() {
                let _ = fs::remove_file(&path);
                continue;
            }
            let result = fs::read(self.result_file(&name))
                .ok()
                .and_then(|b| serde_json::from_slice::<OwedResult>(&b).ok());
            owed.push(Owed {
                deployment_id: name,
                host_command_id,
                result,
                modified,
            });
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
        t.finish("d-1", &result).expect("finish");
        assert!(
            !t.in_progress(),
            "a finished command is owed a report, not running"
        );
        assert_eq!(t.owed().expect("owed")[0].result.as_ref(), Some(&result));
        t.accepted("d-1");
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

    /// Assertions the mutation run (docs/reliability.md) found missing.
    #[test]
    fn owed_reads_only_tracking_files_and_reports_a_broken_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ongoing-deployment");
        let t = Tracker::new(&dir);
        assert_eq!(t.dir(), dir);
        // No directory yet: nothing owed (not an error).
        assert!(t.owed().expect("a missing dir is empty").is_empty());
        t.start("d-1", "hc-1").expect("start");
        let result = OwedResult {
            status: "Failed".into(),
            payload: "{}".into(),
        };
        t.finish("d-1", &result).expect("finish");
        // The `.result` file is part of d-1, not a second command.
        let owed = t.owed().expect("owed");
        assert_eq!(owed.len(), 1, "{owed:?}");
        assert_eq!(owed[0].host_command_id, "hc-1");
        assert_eq!(owed[0].deployment_id, "d-1");
        // A directory that cannot be read is an error, not "nothing owed".
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, b"x").expect("write");
        assert!(Tracker::new(&file).owed().is_err());
    }
}
