//! Executing an install plan (agent-behaviour.md §6): clean up the group's previous install,
//! apply `file_exists_behavior`, write `<dg>-install.json`, then copy, make directories and set
//! permissions while recording every installed path in `<dg>-cleanup` before it exists (the AWS
//! agent records a directory after making it), so a kill at any point leaves a cleanup file the
//! next install can act on.
//!
//! Copies use the kernel's fast path (`copy_file_range` through `std::io::copy` between files)
//! and run in parallel on a pool of workers that lives for the whole install; each batch's
//! paths are written to the cleanup file before it is handed out, in plan order, and the plan
//! waits for the copies only before a permission instruction and at the end.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::appspec::{AppSpec, FileExistsBehavior};
use crate::deploy::dest::{DestWalker, Found, Trust, WalkError};
use crate::deploy::layout::{DeploymentRoot, write_atomic_with};
use crate::deploy::permissions::{self, IdCache, PermissionError};
use crate::deploy::plan::{self, InstallPlan, Instruction, PlanError};

/// Why an `Install` failed. All are reported with error code 5.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Cancelled(#[from] crate::deploy::cancel::Cancelled),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("The deployment failed because a specified file already exists at this location: {}", .0.display())]
    FileExists(PathBuf),
    #[error(
        "The deployment failed because an invalid option was specified for fileExistsBehavior: \
         {0}. Valid options include OVERWRITE, RETAIN, and DISALLOW."
    )]
    InvalidFileExistsBehavior(String),
    #[error(transparent)]
    Permission(#[from] PermissionError),
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot install {}: a newline in a path cannot be recorded in the cleanup file",
        .0.display()
    )]
    NewlineInPath(PathBuf),
    #[error(transparent)]
    Walk(#[from] WalkError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// What one `Install` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstallSummary {
    pub removed: usize,
    pub copied: usize,
    pub directories: usize,
    pub permissions: usize,
}

/// One line of a cleanup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupEntry {
    Path(PathBuf),
    /// `semanage\0<path>`: a SELinux file-context rule to delete.
    Semanage(PathBuf),
}

/// Parses a cleanup file. A last line without a trailing newline is a torn write and dropped.
pub fn parse_cleanup(bytes: &[u8]) -> Vec<CleanupEntry> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // `split` yields a final piece after the last newline: empty when the file ends in '\n',
    // the torn remainder otherwise. Either way it is not an entry.
    lines.pop();
    lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|line| match line.strip_prefix(b"semanage\0") {
            Some(path) => CleanupEntry::Semanage(PathBuf::from(std::ffi::OsStr::from_bytes(path))),
            None => CleanupEntry::Path(PathBuf::from(std::ffi::OsStr::from_bytes(line))),
        })
        .collect()
}

/// Undoes the group's previous install from its cleanup file, newest entry first: files and
/// symlinks are removed, directories only when empty, missing paths ignored. The cleanup file
/// is deleted afterwards. Returns the number of entries processed.
pub fn cleanup_previous(root: &DeploymentRoot, group_id: &str) -> Result<usize, InstallError> {
    let file = root.cleanup_file(group_id);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read the cleanup file", &file)(e)),
    };
    let entries = parse_cleanup(&bytes);
    let mut walker = DestWalker::new(Trust::now()).map_err(io_err("open", Path::new("/")))?;
    for entry in entries.iter().rev() {
        crate::deploy::cancel::check()?;
        match entry {
            CleanupEntry::Semanage(path) => permissions::remove_context(path),
            CleanupEntry::Path(path) => remove_installed(&mut walker, path)?,
        }
    }
    fs::remove_file(&file).map_err(io_err("remove the cleanup file", &file))?;
    Ok(entries.len())
}

/// Removes one installed path relative to its parent's descriptor (`unlinkat`), never through
/// a symlink that is not trusted: an entry whose parent can no longer be reached that way is
/// left alone (it is not where Install put it any more).
fn remove_installed(walker: &mut DestWalker, path: &Path) -> Result<(), InstallError> {
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let (dir, name) = match walker.parent(path) {
        Ok(x) => x,
        Err(e) if e.is_missing() => return Ok(()),
        Err(e @ WalkError::Untrusted { .. }) => {
            tracing::warn!("not removing {}: {e}", path.display());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let is_dir = match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
    {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e.into())),
    };
    let first = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    let result = match unlinkat(dir, name, first) {
        // Swapped between the stat and the unlink: the other kind, still by name in `dir`.
        Err(nix::errno::Errno::ENOTDIR) if is_dir => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
        }
        Err(nix::errno::Errno::EISDIR) if !is_dir => unlinkat(dir, name, UnlinkatFlags::RemoveDir),
        other => other,
    };
    match result {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        // A directory that still holds files we did not install survives.
        Err(nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(io_err("remove", path)(e.into())),
    }
}

/// The behaviour that applies: the appspec's value wins; otherwise the deployment's (already
/// upcased by the spec parser). An invalid deployment value only fails when a conflict needs it.
pub fn effective_behavior(
    appspec: &AppSpec,
    deployment: &str,
) -> Result<FileExistsBehavior, String> {
    match appspec.file_exists_behavior {
        Some(b) => Ok(b),
        None => FileExistsBehavior::from_exact(deployment).ok_or_else(|| deployment.to_owned()),
    }
}

/// What happens to each copy whose destination already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub plan: InstallPlan,
    /// Destinations that exist and will be replaced (OVERWRITE).
    pub overwritten: Vec<PathBuf>,
    /// Destinations that exist and are kept (RETAIN); their copies were dropped.
    pub retained: Vec<PathBuf>,
}

/// Applies `file_exists_behavior` to a plan. `exists` says whether a path is present on disk
/// (after the previous install was cleaned up); `plan` mode passes a predicate that pretends
/// the cleanup already happened.
pub fn resolve_conflicts(
    plan: InstallPlan,
    behavior: Result<FileExistsBehavior, String>,
    exists: impl Fn(&Path) -> bool,
) -> Result<Resolved, InstallError> {
    let mut overwritten = Vec::new();
    let mut retained = Vec::new();
    let mut instructions = Vec::with_capacity(plan.instructions.len());
    for instruction in plan.instructions {
        if let Instruction::Copy { destination, .. } = &instruction
            && exists(destination)
        {
            match &behavior {
                Ok(FileExistsBehavior::Disallow) => {
                    return Err(InstallError::FileExists(destination.to_path_buf()));
                }
                Ok(FileExistsBehavior::Overwrite) => overwritten.push(destination.to_path_buf()),
                Ok(FileExistsBehavior::Retain) => {
                    retained.push(destination.to_path_buf());
                    continue;
                }
                Err(value) => {
                    return Err(InstallError::InvalidFileExistsBehavior(value.clone()));
                }
            }
        }
        instructions.push(instruction);
    }
    Ok(Resolved {
        plan: InstallPlan { instructions },
        overwritten,
        retained,
    })
}

/// Everything one `Install` needs.
#[derive(Debug)]
pub struct InstallRequest<'a> {
    pub root: &'a DeploymentRoot,
    pub group_id: &'a str,
    /// `<root>/<dg>/<d>/deployment-archive`.
    pub archive_dir: &'a Path,
    /// `<root>/<dg>/<d>`, recorded as last successful at the end.
    pub deployment_dir: &'a Path,
    pub appspec: &'a AppSpec,
    /// The deployment's `FileExistsBehavior`, upcased.
    pub deployment_file_exists_behavior: &'a str,
}

/// Runs one `Install` (§6.1).
pub fn install(req: &InstallRequest) -> Result<InstallSummary, InstallError> {
    install_with_progress(req, &mut |_, _| {})
}

/// [`install`], calling `progress(copied, total)` after each batch of copies.
pub fn install_with_progress(
    req: &InstallRequest,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InstallSummary, InstallError> {
    let instructions_dir = req.root.instructions_dir();
    fs::create_dir_all(&instructions_dir).map_err(io_err("create", &instructions_dir))?;
    // Symlinks on destination paths changed after this moment are not followed.
    let trust = Trust::now();
    let mut summary = InstallSummary {
        removed: cleanup_previous(req.root, req.group_id)?,
        ..InstallSummary::default()
    };

    // With a valid behaviour the plan applies it while it is built, as the AWS installer does:
    // DISALLOW fails in order with the other plan errors, and a RETAINed file is left out of
    // the plan, so permissions do not select it either. An invalid deployment value only
    // fails when a conflict needs it.
    let (plan, overwritten) =
        match effective_behavior(req.appspec, req.deployment_file_exists_behavior) {
            Ok(behavior) => {
                let plan = plan::build_for_install(req.appspec, req.archive_dir, behavior)?;
                let overwritten: Vec<PathBuf> = plan
                    .instructions
                    .iter()
                    .filter_map(|i| match i {
                        Instruction::Copy { destination, .. }
                            if fs::symlink_metadata(destination).is_ok() =>
                        {
                            Some(destination.to_path_buf())
                        }
                        _ => None,
                    })
                    .collect();
                (plan, overwritten)
            }
            Err(invalid) => {
                let plan = plan::build(req.appspec, req.archive_dir)?;
                let resolved =
                    resolve_conflicts(plan, Err(invalid), |p| fs::symlink_metadata(p).is_ok())?;
                (resolved.plan, resolved.overwritten)
            }
        };
    let resolved = Resolved {
        plan,
        overwritten,
        retained: Vec::new(),
    };

    let install_json = req.root.install_json(req.group_id);
    write_atomic_with(&install_json, |w| resolved.plan.write_install_json(w))
        .map_err(io_err("write", &install_json))?;

    let cleanup_path = req.root.cleanup_file(req.group_id);
    let cleanup = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .open(&cleanup_path)
        .map_err(io_err("create", &cleanup_path))?;
    let mut executor = Execution {
        walker: DestWalker::new(trust).map_err(io_err("open", Path::new("/")))?,
        trust,
        cleanup,
        cleanup_path: &cleanup_path,
        ids: IdCache::default(),
        preserve_owner: nix::unistd::geteuid().is_root(),
        overwritten: resolved.overwritten.iter().cloned().collect(),
        summary: &mut summary,
        total_copies: resolved
            .plan
            .instructions
            .iter()
            .filter(|i| matches!(i, Instruction::Copy { .. }))
            .count(),
        progress,
    };
    executor.run(&resolved.plan.instructions)?;
    executor
        .cleanup
        .sync_all()
        .map_err(io_err("sync", &cleanup_path))?;

    req.root
        .set_last_successful(req.group_id, req.deployment_dir)
        .map_err(io_err(
            "record the last successful install in",
            &instructions_dir,
        ))?;
    Ok(summary)
}

/// How many copies are recorded in the cleanup file and handed to the workers at once: large
/// enough to keep the workers busy and the writes few, small enough that a kill leaves little
/// recorded-but-not-copied.
const COPY_BATCH: usize = 512;

struct Execution<'a> {
    /// Destination paths are walked through descriptors (main thread; workers have their own).
    walker: DestWalker,
    trust: Trust,
    total_copies: usize,
    progress: &'a mut dyn FnMut(usize, usize),
    cleanup: File,
    cleanup_path: &'a Path,
    ids: IdCache,
    preserve_owner: bool,
    overwritten: HashSet<PathBuf>,
    summary: &'a mut InstallSummary,
}

/// Copies handed to the workers, and what they report back.
#[derive(Default)]
struct CopyQueue {
    /// Indices into the instruction list, in plan order.
    jobs: std::collections::VecDeque<usize>,
    /// Jobs handed out and not yet finished.
    busy: usize,
    done: usize,
    error: Option<InstallError>,
    closed: bool,
}

/// A pool of copy workers living for the whole install. The main thread walks the plan in
/// order (so the cleanup file keeps the plan's order and every entry is written before its
/// path exists) and waits for the copies only where an instruction needs them finished:
/// before a permission instruction, and at the end. Directories are made by the main thread
/// as the plan reaches them; a copy is only handed out after the directories before it.
struct Pool<'s> {
    queue: &'s std::sync::Mutex<CopyQueue>,
    work: &'s std::sync::Condvar,
    idle: &'s std::sync::Condvar,
}

impl Pool<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, CopyQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn submit(&self, jobs: impl Iterator<Item = usize>) {
        let mut q = self.lock();
        q.jobs.extend(jobs);
        self.work.notify_all();
    }

    /// Waits until every submitted copy finished; returns how many finished so far, or the
    /// first error.
    fn wait(&self) -> Result<usize, InstallError> {
        let mut q = self.lock();
        while q.error.is_none() && (!q.jobs.is_empty() || q.busy > 0) {
            q = self
                .idle
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match q.error.take() {
            Some(e) => Err(e),
            None => Ok(q.done),
        }
    }

    /// The first error so far, without waiting.
    fn failed(&self) -> Option<InstallError> {
        self.lock().error.take()
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.jobs.clear();
        self.work.notify_all();
    }

    fn worker(
        &self,
        instructions: &[Instruction],
        overwritten: &HashSet<PathBuf>,
        preserve_owner: bool,
        trust: Trust,
    ) {
        let mut walker = match DestWalker::new(trust) {
            Ok(w) => w,
            Err(e) => {
                let mut q = self.lock();
                if q.error.is_none() {
                    q.error = Some(io_err("open", Path::new("/"))(e));
                }
                self.idle.notify_all();
                return;
            }
        };
        loop {
            let n = {
                let mut q = self.lock();
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(n) = q.jobs.pop_front() {
                        q.busy += 1;
                        break n;
                    }
                    q = self
                        .work
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            // A panic in a copy must not leave `busy` counted for good (the plan would wait
            // for it forever): it becomes this copy's error.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &instructions[n] {
                    Instruction::Copy {
                        source,
                        destination,
                        symlink,
                    } => {
                        crate::test_pause::test_panic_point("install-copy", None);
                        crate::deploy::cancel::check()?;
                        copy_one(
                            &mut walker,
                            source,
                            destination,
                            *symlink,
                            overwritten.contains(&**destination),
                            preserve_owner,
                        )
                    }
                    _ => Ok(()),
                }))
                .unwrap_or_else(|panic| {
                    Err(InstallError::Io {
                        what: "copy (the copy worker panicked)",
                        path: match &instructions[n] {
                            Instruction::Copy { destination, .. } => destination.to_path_buf(),
                            _ => PathBuf::new(),
                        },
                        source: io::Error::other(panic_message(&*panic)),
                    })
                });
            let mut q = self.lock();
            q.busy -= 1;
            q.done += 1;
            if let Err(e) = result {
                // The first error wins; nothing more is started.
                if q.error.is_none() {
                    q.error = Some(e);
                }
                q.jobs.clear();
            }
            if q.error.is_some() || (q.jobs.is_empty() && q.busy == 0) {
                self.idle.notify_all();
            }
        }
    }
}

impl Execution<'_> {
    fn record(&mut self, line: &[u8], path: &Path) -> Result<(), InstallError> {
        if line.contains(&b'\n') {
            return Err(InstallError::NewlineInPath(path.to_path_buf()));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.cleanup
            .write_all(&buf)
            .map_err(io_err("write", self.cleanup_path))
    }

    fn run(&mut self, instructions: &[Instruction]) -> Result<(), InstallError> {
        let copies = instructions
            .iter()
            .filter(|i| matches!(i, Instruction::Copy { .. }))
            .count();
        if copies == 0 {
            return self.run_with(instructions, None);
        }
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8)
            .min(copies);
        let queue = std::sync::Mutex::new(CopyQueue::default());
        let (work, idle) = (std::sync::Condvar::new(), std::sync::Condvar::new());
        let pool = Pool {
            queue: &queue,
            work: &work,
            idle: &idle,
        };
        let overwritten = std::mem::take(&mut self.overwritten);
        let preserve_owner = self.preserve_owner;
        let trust = self.trust;
        let result = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| pool.worker(instructions, &overwritten, preserve_owner, trust))
                })
                .collect();
            let result = self.run_with(instructions, Some(&pool));
            pool.close();
            let panicked = handles.into_iter().any(|h| h.join().is_err());
            match result {
                Ok(()) if panicked => Err(InstallError::Io {
                    what: "copy (worker panicked)",
                    path: PathBuf::new(),
                    source: io::Error::other("copy worker panicked"),
                }),
                other => other,
            }
        });
        self.overwritten = overwritten;
        result
    }

    /// Walks the plan in order. Copies go to `pool` (or are done here when there is none).
    fn run_with(
        &mut self,
        instructions: &[Instruction],
        pool: Option<&Pool<'_>>,
    ) -> Result<(), InstallError> {
        // Copies recorded in the cleanup file but not yet handed out (plan indices).
        let mut pending: Vec<usize> = Vec::new();
        let mut in_flight = false;
        let mut i = 0;
        while i < instructions.len() {
            crate::deploy::cancel::check()?;
            match &instructions[i] {
                Instruction::Copy { .. } => {
                    pending.push(i);
                    if pending.len() >= COPY_BATCH {
                        self.hand_out(instructions, &mut pending, pool)?;
                        in_flight = true;
                    }
                    i += 1;
                }
                Instruction::Mkdir { directory } => {
                    i += 1;
                    // The copies before it are recorded first: the cleanup file keeps the
                    // plan's order.
                    if !pending.is_empty() {
                        self.hand_out(instructions, &mut pending, pool)?;
                        in_flight = true;
                    }
                    // Made by an earlier entry of this plan or by someone else since the plan
                    // was built (or a trusted symlink to a directory, like `shared ->
                    // /mnt/efs`): then it is not ours to remove.
                    match self.walker.lookup(directory)? {
                        Found::Dir | Found::LinkToDir => continue,
                        Found::Nothing => {}
                        Found::Other => {
                            return Err(io_err("create directory", directory)(io::Error::from(
                                io::ErrorKind::AlreadyExists,
                            )));
                        }
                    }
                    // Write-ahead, like the copies: the directory is in the cleanup file before
                    // it exists, so a kill between the two leaves nothing unrecorded. (Should
                    // someone create it in that instant, it is recorded as ours and removed by
                    // the next cleanup only if empty.)
                    self.record(directory.as_os_str().as_bytes(), directory)?;
                    let (dir, name) = self.walker.parent(directory)?;
                    match nix::sys::stat::mkdirat(
                        dir,
                        name,
                        nix::sys::stat::Mode::from_bits_truncate(0o777),
                    ) {
                        Ok(()) => {}
                        Err(nix::errno::Errno::EEXIST)
                            if nix::sys::stat::fstatat(
                                dir,
                                name,
                                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                            )
                            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) => {}
                        Err(e) => return Err(io_err("create directory", directory)(e.into())),
                    }
                    self.summary.directories += 1;
                }
                other => {
                    // Permissions apply to installed files: every copy before them finishes.
                    if !pending.is_empty() {
                        self.hand_out(instructions, &mut pending, pool)?;
                        in_flight = true;
                    }
                    if in_flight {
                        self.finish_copies(pool)?;
                        in_flight = false;
                    }
                    i = self.apply(instructions, i, other)?;
                }
            }
        }
        if !pending.is_empty() {
            self.hand_out(instructions, &mut pending, pool)?;
            in_flight = true;
        }
        if in_flight {
            self.finish_copies(pool)?;
        }
        Ok(())
    }

    /// Records `pending` copies in the cleanup file (write-ahead), then starts them.
    fn hand_out(
        &mut self,
        instructions: &[Instruction],
        pending: &mut Vec<usize>,
        pool: Option<&Pool<'_>>,
    ) -> Result<(), InstallError> {
        if let Some(e) = pool.and_then(Pool::failed) {
            return Err(e);
        }
        let mut lines = Vec::new();
        for &n in pending.iter() {
            if let Instruction::Copy { destination, .. } = &instructions[n] {
                let bytes = destination.as_os_str().as_bytes();
                if bytes.contains(&b'\n') {
                    return Err(InstallError::NewlineInPath(destination.to_path_buf()));
                }
                lines.extend_from_slice(bytes);
                lines.push(b'\n');
            }
        }
        self.cleanup
            .write_all(&lines)
            .map_err(io_err("write", self.cleanup_path))?;
        match pool {
            Some(pool) => pool.submit(pending.drain(..)),
            None => {
                for n in pending.drain(..) {
                    crate::deploy::cancel::check()?;
                    if let Instruction::Copy {
                        source,
                        destination,
                        symlink,
                    } = &instructions[n]
                    {
                        let replace = self.overwritten.contains(&**destination);
                        copy_one(
                            &mut self.walker,
                            source,
                            destination,
                            *symlink,
                            replace,
                            self.preserve_owner,
                        )?;
                        self.summary.copied += 1;
                    }
                }
                (self.progress)(self.summary.copied, self.total_copies);
            }
        }
        Ok(())
    }

    /// Waits for every copy handed out so far.
    fn finish_copies(&mut self, pool: Option<&Pool<'_>>) -> Result<(), InstallError> {
        if let Some(pool) = pool {
            self.summary.copied = pool.wait()?;
            (self.progress)(self.summary.copied, self.total_copies);
        }
        Ok(())
    }

    /// The permission instruction at `i` (a run of SELinux contexts at once); returns the index
    /// of the next instruction.
    fn apply(
        &mut self,
        instructions: &[Instruction],
        i: usize,
        ins: &Instruction,
    ) -> Result<usize, InstallError> {
        match ins {
            Instruction::Copy { .. } | Instruction::Mkdir { .. } => {}
            Instruction::Chmod { mode, file } => {
                permissions::chmod(&mut self.walker, file, mode.bits)?;
                self.summary.permissions += 1;
            }
            Instruction::Chown { owner, group, file } => {
                let uid = owner
                    .as_deref()
                    .map(|o| self.ids.uid(o, file))
                    .transpose()?;
                let gid = group
                    .as_deref()
                    .map(|g| self.ids.gid(g, file))
                    .transpose()?;
                permissions::chown(&mut self.walker, file, uid, gid)?;
                self.summary.permissions += 1;
            }
            Instruction::Setfacl { acl, file } => {
                permissions::set_acl(&mut self.walker, file, acl, &mut self.ids)?;
                self.summary.permissions += 1;
            }
            Instruction::Semanage { context, .. } => {
                // One external call for a run of paths sharing a context.
                let end = instructions[i..]
                    .iter()
                    .position(|ins| !matches!(ins, Instruction::Semanage { context: c, .. } if c == context))
                    .map_or(instructions.len(), |n| i + n);
                let paths: Vec<PathBuf> = instructions[i..end]
                    .iter()
                    .filter_map(|ins| match ins {
                        Instruction::Semanage { file, .. } => Some(file.to_path_buf()),
                        _ => None,
                    })
                    .collect();
                for real in permissions::set_context(&mut self.walker, context, &paths)? {
                    let mut line = b"semanage\0".to_vec();
                    line.extend_from_slice(real.as_os_str().as_bytes());
                    self.record(&line, &real)?;
                }
                self.summary.permissions += paths.len();
                return Ok(end);
            }
        }
        Ok(i + 1)
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Copies one bundle entry. A symlink is recreated with the same target. A regular file keeps
/// its mode and timestamps (and owner when running as root), like `cp --preserve`. An existing
/// destination being overwritten is unlinked first, so a symlink there is replaced, never
/// written through.
fn copy_one(
    walker: &mut DestWalker,
    source: &Path,
    destination: &Path,
    symlink: bool,
    replace: bool,
    preserve_owner: bool,
) -> Result<(), InstallError> {
    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag};
    crate::test_pause::test_pause_point("install-file");
    let (dir, name) = walker.parent(destination)?;
    if replace {
        match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(InstallError::Io {
                    what: "overwrite",
                    path: destination.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "a directory is in the way",
                    ),
                });
            }
            Ok(_) => {
                match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io_err("replace", destination)(e.into())),
                }
            }
            Err(_) => {}
        }
    }
    if symlink {
        let target = fs::read_link(source).map_err(io_err("read symlink", source))?;
        return nix::unistd::symlinkat(target.as_path(), dir, name)
            .map_err(|e| io_err("create symlink", destination)(e.into()));
    }
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(source)
        .map_err(io_err("open", source))?;
    let meta = src.metadata().map_err(io_err("stat", source))?;
    let mode = meta.mode() & 0o7777;
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
    .map_err(|e| io_err("create", destination)(e.into()))?;
    let mut dst = File::from(fd);
    copy_data(&mut src, &mut dst, meta.len()).map_err(io_err("copy to", destination))?;
    if preserve_owner {
        nix::unistd::fchown(&dst, Some(meta.uid().into()), Some(meta.gid().into()))
            .map_err(|e| io_err("set owner of", destination)(e.into()))?;
    }
    // After chown: a chown clears setuid bits, and the umask narrowed the create mode.
    dst.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(io_err("set mode of", destination))?;
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(io_err("stat", source))?)
        .set_modified(meta.modified().map_err(io_err("stat", source))?);
    dst.set_times(times)
        .map_err(io_err("set times of", destination))?;
    Ok(())
}

/// Copies `len` bytes (the source's size) with `copy_file_range` straight away, then checks the
/// source is at its end; `io::copy` does the same after an `fstat` and an `fcntl` on each side
/// to choose that path, which is four system calls of nine per small file. Falls back to
/// `io::copy` where the kernel cannot copy between these files.
fn copy_data(src: &mut File, dst: &mut File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: both descriptors are open files borrowed for the call; null offsets mean
        // "use and advance the file positions".
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        let result = if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n.unsigned_abs())
        };
        match result {
            // The source shrank: what is left is read below (nothing).
            Ok(0) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(Errno::EINTR) => {}
            // Nothing copied yet and the kernel cannot do it here (old kernel, another
            // filesystem kind, a special file): the generic path.
            Err(
                Errno::ENOSYS | Errno::EXDEV | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM,
            ) if left == len => {
                return io::copy(src, dst).map(drop);
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A source that grew since its `fstat`: copy the rest like `io::copy` would.
    if left == 0 && len > 0 {
        let mut probe = [0u8; 1];
        if io::Read::read(src, &mut probe)? == 1 {
            dst.write_all(&probe)?;
            io::copy(src, dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_dropped() {
        let entries = parse_cleanup(b"/a\n/b\n/c");
        assert_eq!(
            entries,
            vec![
                CleanupEntry::Path("/a".into()),
                CleanupEntry::Path("/b".into())
            ]
        );
        assert!(parse_cleanup(b"").is_empty());
        assert_eq!(
            parse_cleanup(b"semanage\0/srv/x\n"),
            vec![CleanupEntry::Semanage("/srv/x".into())]
        );
    }

    #[test]
    fn cleanup_removes_in_reverse_and_keeps_non_empty_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = DeploymentRoot::new(tmp.path().join("root"), "codedeploy-agent");
        let dest = tmp.path().join("dest");
        fs::create_dir_all(dest.join("sub")).expect("mkdir");
        fs::write(dest.join("sub/ours"), b"1").expect("write");
        fs::write(dest.join("foreign"), b"2").expect("write");
        std::os::unix::fs::symlink("/etc", dest.join("link")).expect("symlink");
        fs::create_dir_all(root.instructions_dir()).expect("mkdir");
        let listing = format!(
            "{d}\n{d}/sub\n{d}/sub/ours\n{d}/link\n{d}/missing\n",
            d = dest.display()
        );
        fs::write(root.cleanup_file("dg"), listing).expect("write");
        assert_eq!(cleanup_previous(&root, "dg").expect("cleanup"), 5);
        assert!(!dest.join("sub").exists());
        assert!(fs::symlink_metadata(dest.join("link")).is_err());
        assert!(dest.join("foreign").exists(), "foreign files survive");
        assert!(dest.exists(), "a directory holding foreign files survives");
        assert!(!root.cleanup_file("dg").exists());
        assert!(Path::new("/etc").exists());
    }
}
