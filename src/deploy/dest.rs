//! Destination paths walked through directory descriptors (issue 12 item 2).
//!
//! Every change Install makes on the destination side (copy, mkdir, mode, owner, ACL,
//! removal of the previous install) goes through [`DestWalker::parent`]: the parent
//! directory is opened from `/` one component at a time with `O_PATH | O_NOFOLLOW |
//! O_DIRECTORY`, and the change is made relative to that descriptor on the final name
//! (`openat(O_EXCL|O_NOFOLLOW)`, `mkdirat`, `fchownat(AT_SYMLINK_NOFOLLOW)`, `unlinkat`, mode
//! and xattrs through an `O_PATH|O_NOFOLLOW` descriptor). A symlink met on the way is followed
//! only when it is *trusted*: owned by root or the agent's user, and its status-change time is
//! before the walker's start (it existed, unmoved, before Install began). Anything else is
//! refused. The descriptors of the last walk are kept, so consecutive files in one directory
//! cost no extra system call.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

/// Symlinks one lookup may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why a destination path could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "refusing to follow the symlink {} on a destination path: {why}. A destination \
         symlink is followed only if it existed before Install began and is owned by root or \
         the agent's user (docs/compatibility.md)",
        path.display()
    )]
    Untrusted { path: PathBuf, why: String },
    #[error("{} is not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    #[error("{} names no file (it ends in `/`, `.` or `..`)", .0.display())]
    NoName(PathBuf),
    #[error("cannot open {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WalkError {
    /// The walk failed because a directory on the way is missing (or is not a directory).
    pub fn is_missing(&self) -> bool {
        matches!(self, WalkError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)))
    }
}

/// Who may own a followed symlink, and since when nothing may have moved it.
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    euid: u32,
    started: (i64, i64),
}

impl Trust {
    /// Symlinks changed from now on are not trusted. The moment is read from the coarse
    /// real-time clock, the one file timestamps are taken from, so anything created after this
    /// call has a status-change time at or after it.
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
            // SAFETY: as above.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        }
        let t = (ts.tv_sec, ts.tv_nsec);
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            started: (t.0, t.1),
        }
    }

    /// `None` when `st` (a symlink's `lstat`) may be followed, else why not.
    pub fn refuses(&self, st: &FileStat) -> Option<String> {
        if st.st_uid != 0 && st.st_uid != self.euid {
            return Some(format!("it is owned by uid {}", st.st_uid));
        }
        if (st.st_ctime, st.st_ctime_nsec) >= self.started {
            return Some("it was created or moved after this Install began".into());
        }
        None
    }

    /// Owner root or the agent's user.
    pub fn trusted_owner(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Walks absolute destination paths through descriptors (see the module documentation).
#[derive(Debug)]
pub struct DestWalker {
    root: OwnedFd,
    trust: Trust,
    /// The lexical components of the last parent walked, each with the descriptor of the
    /// directory it leads to.
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

impl DestWalker {
    pub fn new(trust: Trust) -> io::Result<Self> {
        let root = nix::fcntl::open("/", dir_flags(), Mode::empty())?;
        Ok(Self {
            root,
            trust,
            stack: Vec::new(),
        })
    }

    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// The descriptor of `path`'s parent directory and `path`'s final name.
    pub fn parent<'p>(&mut self, path: &'p Path) -> Result<(BorrowedFd<'_>, &'p OsStr), WalkError> {
        let name = self.walk_parent(path)?;
        Ok((self.top(), name))
    }

    fn top(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }

    fn walk_parent<'p>(&mut self, path: &'p Path) -> Result<&'p OsStr, WalkError> {
        if !path.is_absolute() {
            return Err(WalkError::NotAbsolute(path.to_path_buf()));
        }
        let mut comps: Vec<&[u8]> = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => comps.push(n.as_bytes()),
                Component::RootDir | Component::CurDir => {}
                // Plans hold normalised paths; a `..` here is refused rather than resolved.
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(WalkError::NoName(path.to_path_buf()));
                }
            }
        }
        let Some(name) = comps.pop() else {
            return Err(WalkError::NoName(path.to_path_buf()));
        };
        let common = self
            .stack
            .iter()
            .zip(&comps)
            .take_while(|((open, _), want)| open.as_slice() == **want)
            .count();
        self.stack.truncate(common);
        for comp in &comps[common..] {
            let fd = {
                let dir = self
                    .stack
                    .last()
                    .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
                self.step(dir, comp, path, 0)?
            };
            self.stack.push((comp.to_vec(), fd));
        }
        Ok(OsStr::from_bytes(name))
    }

    /// Opens directory `name` in `dir`, following it if it is a trusted symlink.
    fn step(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &Path,
        links: usize,
    ) -> Result<OwnedFd, WalkError> {
        let io_err = |e: Errno| WalkError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        };
        match openat(dir, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(io_err(Errno::ENOTDIR));
                }
                self.follow(dir, name, &st, path, links)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Follows the symlink `name` in `dir` (already `lstat`ed as `st`) if it is trusted, and
    /// returns the directory it leads to.
    fn follow(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &FileStat,
        path: &Path,
        links: usize,
    ) -> Result<OwnedFd, WalkError> {
        let io_err = |e: Errno| WalkError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        };
        if let Some(why) = self.trust.refuses(st) {
            return Err(WalkError::Untrusted {
                path: path.to_path_buf(),
                why: format!("{} {why}", OsStr::from_bytes(name).to_string_lossy()),
            });
        }
        if links >= MAX_LINKS {
            return Err(io_err(Errno::ELOOP));
        }
        let target = readlinkat(dir, name).map_err(io_err)?;
        let bytes = target.as_bytes();
        let mut cur: OwnedFd = if bytes.starts_with(b"/") {
            self.root.try_clone().map_err(|e| WalkError::Io {
                path: path.to_path_buf(),
                source: e,
            })?
        } else {
            openat(dir, ".", dir_flags(), Mode::empty()).map_err(io_err)?
        };
        for c in Path::new(OsStr::from_bytes(bytes)).components() {
            cur = match c {
                Component::Normal(n) => self.step(cur.as_fd(), n.as_bytes(), path, links + 1)?,
                // `..` of a real directory is never a symlink.
                Component::ParentDir => {
                    openat(cur.as_fd(), "..", dir_flags(), Mode::empty()).map_err(io_err)?
                }
                _ => continue,
            };
        }
        Ok(cur)
    }

    /// What is at `path` (its parent walked as by [`DestWalker::parent`]).
    pub fn lookup(&mut self, path: &Path) -> Result<Found, WalkError> {
        let name = self.walk_parent(path)?;
        let dir = self.top();
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Found::Dir),
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                match self.follow(dir, name.as_bytes(), &st, path, 0) {
                    Ok(_) => Ok(Found::LinkToDir),
                    Err(e) if e.is_missing() => Ok(Found::Other),
                    Err(e) => Err(e),
                }
            }
            Ok(_) => Ok(Found::Other),
            Err(Errno::ENOENT) => Ok(Found::Nothing),
            Err(e) => Err(WalkError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }
}

/// What [`DestWalker::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Dir,
    /// A trusted symlink to a directory.
    LinkToDir,
    Other,
}

/// An `O_PATH | O_NOFOLLOW` descriptor of `name` in `dir` and its `fstat`; `None` when it is a
/// symlink (modes and ACLs are not applied through links).
pub fn open_object(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<(OwnedFd, FileStat)>> {
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(&fd)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Ok(None);
    }
    Ok(Some((fd, st)))
}

/// `/proc/self/fd/N` for an `O_PATH` descriptor: a path-taking call (chmod, setxattr) on it
/// reaches exactly the inode the descriptor holds, whatever is at the name now.
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Where `/proc` is not mounted: a real descriptor of the same object (read-only,
/// non-blocking, no controlling terminal), checked to be the same inode.
pub fn reopen_same(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> io::Result<OwnedFd> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let now = fstat(&fd)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other(
            "the file was replaced while its permissions were set",
        ));
    }
    Ok(fd)
}

/// `fchmodat2` (Linux 6.6), the same number on every architecture's generic table.
const SYS_FCHMODAT2: libc::c_long = 452;

/// Set once the kernel (or a seccomp filter) refused `fchmodat2`.
static NO_FCHMODAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the mode of `name` in `dir` without following a symlink there: one `fchmodat2(...,
/// AT_SYMLINK_NOFOLLOW)` where the kernel has it, else an `O_PATH | O_NOFOLLOW` descriptor
/// ([`open_object`], [`chmod_object`]). `Ok(false)`: it is a symlink, left alone.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, bits: u32) -> io::Result<bool> {
    use std::sync::atomic::Ordering;
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        let c = CString::new(name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid descriptor and NUL-terminated name; the call reads nothing else.
        let rc = unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                dir.as_raw_fd(),
                c.as_ptr(),
                bits as libc::c_uint,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // A symlink: no mode of its own.
            Some(libc::EOPNOTSUPP) => return Ok(false),
            Some(libc::ENOSYS | libc::EPERM) => NO_FCHMODAT2.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    match open_object(dir, name)? {
        None => Ok(false),
        Some((fd, st)) => chmod_object(dir, name, fd.as_fd(), &st, bits).map(|()| true),
    }
}

/// Sets the mode of the object `fd` (from [`open_object`]).
pub fn chmod_object(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    fd: BorrowedFd<'_>,
    st: &FileStat,
    bits: u32,
) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: `p` is a valid NUL-terminated path.
    if unsafe { libc::chmod(p.as_ptr(), bits as libc::mode_t) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOENT) {
        return Err(e);
    }
    let real = reopen_same(dir, name, st)?;
    nix::sys::stat::fchmod(&real, Mode::from_bits_truncate(bits)).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    use super::*;

    #[test]
    fn chmod_at_changes_files_and_skips_symlinks_with_and_without_fchmodat2() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        std::fs::write(&target, "x").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        symlink(&target, tmp.path().join("link")).expect("link");
        std::fs::write(tmp.path().join("file"), "y").expect("write");
        let dir = nix::fcntl::open(tmp.path(), dir_flags(), Mode::empty()).expect("open");
        for forced in [false, true] {
            NO_FCHMODAT2.store(forced, std::sync::atomic::Ordering::Relaxed);
            assert!(!chmod_at(dir.as_fd(), OsStr::new("link"), 0o666).expect("link"));
            assert!(chmod_at(dir.as_fd(), OsStr::new("file"), 0o640).expect("file"));
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&target), 0o600, "forced fallback: {forced}");
            assert_eq!(mode(&tmp.path().join("file")), 0o640);
            std::fs::set_permissions(
                tmp.path().join("file"),
                std::fs::Permissions::from_mode(0o644),
            )
            .expect("reset");
        }
        NO_FCHMODAT2.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn trusted_links_are_followed_and_new_ones_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        symlink(&real, tmp.path().join("old")).expect("link");
        std::thread::sleep(Duration::from_millis(20));
        let mut w = DestWalker::new(Trust::now()).expect("walker");
        let old = tmp.path().join("old/f");
        let (dir, name) = w.parent(&old).expect("trusted");
        assert_eq!(name, "f");
        nix::fcntl::openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o600),
        )
        .expect("create");
        assert!(real.join("f").exists());
        symlink(&real, tmp.path().join("new")).expect("link");
        let e = w.parent(&tmp.path().join("new/f")).expect_err("new link");
        assert!(matches!(e, WalkError::Untrusted { .. }), "{e}");
    }
}
