//! The deployment root on disk (agent-behaviour.md §4.1): where every bundle, archive, log and
//! instruction file lives, atomic state writes, and pruning of old revisions (§4.2).
//!
//! ```text
//! <root>/<dg>/<d>/{bundle.tar, deployment-archive/, logs/scripts.log}
//! <root>/deployment-instructions/{<dg>-install.json, <dg>-cleanup,
//!                                 <dg>_last_successful_install, <dg>_most_recent_install}
//! <root>/deployment-logs/<program>-deployments.log
//! <root>/<ongoing-deployment>/<DeploymentId>
//! ```
//!
//! Unlike the AWS agent, every state file here is written atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory), so a kill at any instant leaves either
//! the old or the new content.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The number of deployment directories kept per group when `max_revisions` is unset.
pub const DEFAULT_MAX_REVISIONS: u32 = 5;

/// The deployment root's own entries (besides the tracking directory, whose name is
/// configurable): a deployment group of one of these names would share its directory.
pub const RESERVED_NAMES: &[&str] = &["deployment-instructions", "deployment-logs"];

/// Refuses a deployment group name whose directory `<root>/<group>` would be one of the
/// deployment root's own (`deployment-instructions`, `deployment-logs`, the tracking directory
/// `tracking_dir_name`), or is not a plain directory name. Pruning such a group would delete
/// other groups' state.
pub fn check_group_name(group: &str, tracking_dir_name: &str) -> Result<(), String> {
    if group.is_empty()
        || group == "."
        || group == ".."
        || group.contains('/')
        || group.contains('\0')
    {
        return Err(format!(
            "The deployment group {group:?} cannot be used as a directory name in the deployment \
             root: it must not be empty, '.' or '..' or contain '/'"
        ));
    }
    if RESERVED_NAMES.contains(&group) || group == tracking_dir_name {
        return Err(format!(
            "The deployment group {group:?} has the name of one of the deployment root's own \
             directories ({}, {}, {tracking_dir_name}); the agent keeps its state there, so a \
             group of that name would delete other groups' state. Use another deployment group \
             name",
            RESERVED_NAMES[0], RESERVED_NAMES[1]
        ));
    }
    Ok(())
}

/// A held per-group deployment lock (see [`DeploymentRoot::lock_group`]); released on drop.
#[derive(Debug)]
pub struct GroupLock {
    _file: File,
}

/// Paths under one deployment root. Cheap to clone; holds no open files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRoot {
    root: PathBuf,
    program_name: String,
}

impl DeploymentRoot {
    /// `root` is kept as configured (not canonicalised): the AWS agent writes the
    /// last-successful and most-recent markers with the configured spelling.
    pub fn new(root: impl Into<PathBuf>, program_name: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            program_name: program_name.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<dg>`.
    pub fn group_dir(&self, group_id: &str) -> PathBuf {
        self.root.join(group_id)
    }

    /// `<root>/<dg>/<d>`, the "deployment root dir" of one deployment.
    pub fn deployment_dir(&self, group_id: &str, deployment_id: &str) -> PathBuf {
        self.group_dir(group_id).join(deployment_id)
    }

    /// `<root>/deployment-instructions`.
    pub fn instructions_dir(&self) -> PathBuf {
        self.root.join("deployment-instructions")
    }

    /// `<root>/deployment-instructions/<dg>-cleanup`.
    pub fn cleanup_file(&self, group_id: &str) -> PathBuf {
        self.instructions_dir().join(format!("{group_id}-cleanup"))
    }

    /// `<root>/deployment-instructions/<dg>-install.json`.
    pub fn install_json(&self, group_id: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group_id}-install.json"))
    }

    /// `<root>/deployment-instructions/<dg>_last_successful_install`.
    pub fn last_successful_file(&self, group_id: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group_id}_last_successful_install"))
    }

    /// `<root>/deployment-instructions/<dg>_most_recent_install`.
    pub fn most_recent_file(&self, group_id: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group_id}_most_recent_install"))
    }

    /// `<root>/deployment-instructions/.<dg>.lock`: the lock `codedeploy-local` holds for a
    /// whole deployment and the daemon for each command of the group.
    pub fn group_lock_file(&self, group_id: &str) -> PathBuf {
        self.instructions_dir().join(format!(".{group_id}.lock"))
    }

    /// Takes the group's deployment lock (an advisory `flock` on [`Self::group_lock_file`],
    /// closed on exec, so a hook's background children never hold it). When another process
    /// holds it, `waiting` is called once with a message naming the holder, then this blocks
    /// until it is free. The holder's pid and deployment id are written into the file.
    pub fn lock_group(
        &self,
        group_id: &str,
        deployment_id: &str,
        waiting: &mut dyn FnMut(String),
    ) -> io::Result<GroupLock> {
        use std::os::unix::fs::FileExt;
        fs::create_dir_all(self.instructions_dir())?;
        let path = self.group_lock_file(group_id);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let mut words = holder.split_whitespace();
                let message = match (words.next(), words.next()) {
                    (Some(pid), Some(deployment)) => format!(
                        "waiting for deployment {deployment} of group {group_id} (pid {pid}) to finish"
                    ),
                    _ => format!(
                        "waiting for another deployment of group {group_id} to finish (lock {})",
                        path.display()
                    ),
                };
                waiting(message);
                file.lock()?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.write_all_at(
            format!("{} {deployment_id}\n", std::process::id()).as_bytes(),
            0,
        )?;
        Ok(GroupLock { _file: file })
    }

    /// `<root>/deployment-logs`.
    pub fn deployment_logs_dir(&self) -> PathBuf {
        self.root.join("deployment-logs")
    }

    /// `<root>/deployment-logs/<program>-deployments.log`.
    pub fn deployments_log(&self) -> PathBuf {
        self.deployment_logs_dir()
            .join(format!("{}-deployments.log", self.program_name))
    }

    /// `<root>/<tracking dir name>` (config `ongoing_deployment_tracking`).
    pub fn ongoing_dir(&self, tracking_dir_name: &str) -> PathBuf {
        self.root.join(tracking_dir_name)
    }

    /// The deployment dir recorded as the group's last successful install, if any.
    pub fn last_successful(&self, group_id: &str) -> io::Result<Option<PathBuf>> {
        read_marker(&self.last_successful_file(group_id))
    }

    /// The deployment dir recorded as the group's most recent download, if any.
    pub fn most_recent(&self, group_id: &str) -> io::Result<Option<PathBuf>> {
        read_marker(&self.most_recent_file(group_id))
    }

    /// Records `deployment_dir` as the group's last successful install (end of `Install`).
    pub fn set_last_successful(&self, group_id: &str, deployment_dir: &Path) -> io::Result<()> {
        self.write_marker(&self.last_successful_file(group_id), deployment_dir)
    }

    /// Records `deployment_dir` as the group's most recent download (end of `DownloadBundle`).
    pub fn set_most_recent(&self, group_id: &str, deployment_dir: &Path) -> io::Result<()> {
        self.write_marker(&self.most_recent_file(group_id), deployment_dir)
    }

    fn write_marker(&self, file: &Path, deployment_dir: &Path) -> io::Result<()> {
        fs::create_dir_all(self.instructions_dir())?;
        // No trailing newline, as the AWS agent writes it.
        write_atomic(file, deployment_dir.as_os_str().as_encoded_bytes())
    }

    /// Removes old deployment dirs of `group_id` so that at most `max_revisions` remain,
    /// counting the current one and never deleting the current or the last successful one
    /// (§4.2). Returns the removed directories, oldest first.
    pub fn prune(
        &self,
        group_id: &str,
        current_deployment_id: &str,
        max_revisions: u32,
    ) -> io::Result<Vec<PathBuf>> {
        let group_dir = self.group_dir(group_id);
        let entries = match fs::read_dir(&group_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut candidates: Vec<(SystemTime, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_name() == OsStr::new(current_deployment_id) {
                continue;
            }
            let path = entry.path();
            let modified = entry.metadata()?.modified()?;
            candidates.push((modified, path));
        }
        // The AWS agent computes the surplus before setting the last successful one aside and
        // does not recompute it.
        let surplus = candidates.len() as i64 - i64::from(max_revisions) + 1;
        if surplus <= 0 {
            return Ok(Vec::new());
        }
        if let Some(last) = self.last_successful(group_id)? {
            candidates.retain(|(_, path)| !same_dir(path, &last));
        }
        candidates.sort();
        let mut removed = Vec::new();
        for (_, path) in candidates.into_iter().take(surplus as usize) {
            remove_tree(&path)?;
            removed.push(path);
        }
        Ok(removed)
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || a.file_name() == b.file_name() && a.parent() == b.parent()
}

fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn read_marker(file: &Path) -> io::Result<Option<PathBuf>> {
    match fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                Ok(None)
            } else {
                Ok(Some(PathBuf::from(text)))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over
/// `path`, then fsync of the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`], with the content written by `write` (through a buffer) instead of held
/// in memory.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = OsStr::new(".").to_os_string();
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let mut buffered = io::BufWriter::with_capacity(256 * 1024, file);
        write(&mut buffered)?;
        let file = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn root() -> (tempfile::TempDir, DeploymentRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = DeploymentRoot::new(dir.path(), "codedeploy-agent");
        (dir, root)
    }

    #[test]
    fn paths_follow_the_aws_layout() {
        let root = DeploymentRoot::new("/opt/codedeploy-agent/deployment-root", "codedeploy-agent");
        let r = "/opt/codedeploy-agent/deployment-root";
        assert_eq!(
            root.deployment_dir("dg", "d-1"),
            PathBuf::from(format!("{r}/dg/d-1"))
        );
        assert_eq!(
            root.cleanup_file("dg"),
            PathBuf::from(format!("{r}/deployment-instructions/dg-cleanup"))
        );
        assert_eq!(
            root.install_json("dg"),
            PathBuf::from(format!("{r}/deployment-instructions/dg-install.json"))
        );
        assert_eq!(
            root.last_successful_file("dg"),
            PathBuf::from(format!(
                "{r}/deployment-instructions/dg_last_successful_install"
            ))
        );
        assert_eq!(
            root.most_recent_file("dg"),
            PathBuf::from(format!(
                "{r}/deployment-instructions/dg_most_recent_install"
            ))
        );
        assert_eq!(
            root.deployments_log(),
            PathBuf::from(format!(
                "{r}/deployment-logs/codedeploy-agent-deployments.log"
            ))
        );
    }

    #[test]
    fn markers_are_written_without_newline_and_read_back() {
        let (_tmp, root) = root();
        assert_eq!(root.last_successful("dg").expect("read"), None);
        let d = root.deployment_dir("dg", "d-1");
        root.set_last_successful("dg", &d).expect("write");
        let raw = fs::read(root.last_successful_file("dg")).expect("raw");
        assert_eq!(raw, d.as_os_str().as_encoded_bytes());
        assert_eq!(root.last_successful("dg").expect("read"), Some(d));
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(root.instructions_dir())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    fn make_deployments(root: &DeploymentRoot, ids: &[&str]) {
        let base = SystemTime::now() - Duration::from_secs(1000);
        for (i, id) in ids.iter().enumerate() {
            let dir = root.deployment_dir("dg", id);
            fs::create_dir_all(dir.join("deployment-archive")).expect("mkdir");
            let t = base + Duration::from_secs(10 * i as u64);
            File::open(&dir)
                .expect("open")
                .set_modified(t)
                .expect("mtime");
        }
    }

    #[test]
    fn prune_keeps_max_revisions_including_current_and_last_successful() {
        let (_tmp, root) = root();
        make_deployments(&root, &["d1", "d2", "d3", "d4"]);
        // d1 is the last successful one: it must survive even though it is the oldest.
        root.set_last_successful("dg", &root.deployment_dir("dg", "d1"))
            .expect("marker");
        let removed = root.prune("dg", "d4", 2).expect("prune");
        // Candidates d1..d3, surplus 3 - 2 + 1 = 2; d1 is set aside; d2 and d3 go.
        assert_eq!(
            removed,
            vec![
                root.deployment_dir("dg", "d2"),
                root.deployment_dir("dg", "d3")
            ]
        );
        assert!(root.deployment_dir("dg", "d1").exists());
        assert!(root.deployment_dir("dg", "d4").exists());
    }

    #[test]
    fn prune_removes_oldest_first_and_nothing_when_under_the_limit() {
        let (_tmp, root) = root();
        make_deployments(&root, &["d1", "d2", "d3"]);
        assert!(root.prune("dg", "d3", 5).expect("prune").is_empty());
        let removed = root.prune("dg", "d3", 2).expect("prune");
        assert_eq!(removed, vec![root.deployment_dir("dg", "d1")]);
        assert!(root.prune("nogroup", "d", 1).expect("prune").is_empty());
    }
}
