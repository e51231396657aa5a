//! Process and directory hardening the v2 agent offers as configuration switches
//! (docs/configuration.md, "Hardening"): core dumps of the agent process, and the modes of the
//! deployment root and the log directory.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use crate::deploy::layout::DeploymentRoot;

/// `RLIMIT_CORE` as the agent found it, restored in every hook so applications started by a
/// hook keep the host's core-dump setting.
static ORIGINAL_CORE_LIMIT: OnceLock<libc::rlimit> = OnceLock::new();

/// `disable_core_dumps`: the agent holds credentials in memory, so it never writes a core file
/// (`RLIMIT_CORE` soft limit 0) and cannot be read through ptrace or `/proc/<pid>/mem` by
/// processes of its own user that lack `CAP_SYS_PTRACE` (`PR_SET_DUMPABLE` 0). Failures are
/// returned as warnings for the operator.
pub fn disable_core_dumps() -> Vec<String> {
    let mut warnings = Vec::new();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } == 0 {
        let _ = ORIGINAL_CORE_LIMIT.set(limit);
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
            warnings.push(format!(
                "disable_core_dumps: cannot set RLIMIT_CORE to 0: {}",
                io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        warnings.push(format!(
            "disable_core_dumps: cannot clear PR_SET_DUMPABLE: {}",
            io::Error::last_os_error()
        ));
    }
    warnings
}

/// The core-file limit to give a hook: the one the agent started with, when it lowered it.
pub(crate) fn hook_core_limit() -> Option<libc::rlimit> {
    ORIGINAL_CORE_LIMIT.get().copied()
}

fn chmod_if_present(path: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        // Never follow a symlink: only what the agent itself created is tightened.
        Ok(meta) if meta.file_type().is_symlink() => Ok(()),
        Ok(meta) if meta.permissions().mode() & 0o7777 == mode => Ok(()),
        Ok(_) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `restrict_agent_dir_permissions`: the deployment root 0711 (hooks running as other users
/// still reach their deployment archive), the instructions and tracking directories 0700, the
/// deployments log directory 0750 and its file 0640, the group and deployment directories
/// 0711, each deployment's `logs/` 0750 and `scripts.log` 0640, and `pid_dir` 0700. The
/// deployment archive keeps its modes: `runas` users read their scripts there.
pub fn restrict_agent_dirs(
    root: &DeploymentRoot,
    tracking_dir_name: &str,
    group_and_deployment: Option<(&str, &str)>,
    pid_dir: Option<&Path>,
) -> io::Result<()> {
    chmod_if_present(root.root(), 0o711)?;
    chmod_if_present(&root.instructions_dir(), 0o700)?;
    chmod_if_present(&root.ongoing_dir(tracking_dir_name), 0o700)?;
    chmod_if_present(&root.deployment_logs_dir(), 0o750)?;
    chmod_if_present(&root.deployments_log(), 0o640)?;
    if let Some(dir) = pid_dir {
        chmod_if_present(dir, 0o700)?;
    }
    if let Some((group, deployment)) = group_and_deployment {
        chmod_if_present(&root.group_dir(group), 0o711)?;
        let dir = root.deployment_dir(group, deployment);
        chmod_if_present(&dir, 0o711)?;
        chmod_if_present(&dir.join("logs"), 0o750)?;
        chmod_if_present(&dir.join("logs/scripts.log"), 0o640)?;
    }
    Ok(())
}

/// `restrict_log_dir_permissions`: `log_dir` 0750 and every file directly in it 0640 (the
/// directory mode alone already keeps other users out of files created later).
pub fn restrict_log_dir(log_dir: &Path) -> io::Result<()> {
    chmod_if_present(log_dir, 0o750)?;
    if let Ok(entries) = fs::read_dir(log_dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                chmod_if_present(&entry.path(), 0o640)?;
            }
        }
    }
    Ok(())
}
