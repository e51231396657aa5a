//! File-system work for unpacking, done only relative to directory file descriptors.
//!
//! Every path component is opened with `O_NOFOLLOW | O_DIRECTORY`, files are created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, and links with `symlinkat`/`linkat`, so no write can be
//! redirected by a symlink, whether the archive planted it or it appeared on disk mid-way.
//! Directory modes and times are applied at the end, deepest first (as GNU tar does), so a
//! read-only directory in the bundle can still be filled.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

use super::Rejection;
use super::names::{RelPath, join};

/// Size of the one copy buffer an unpack uses, whatever the archive size.
const COPY_BUFFER: usize = 128 * 1024;

/// What went wrong with one entry; the caller adds the entry name and the archive.
#[derive(Debug)]
pub(super) enum FsError {
    /// The entry breaks a safety rule.
    Reject(Rejection),
    /// Reading the entry's data from the archive failed.
    Read(io::Error),
    /// A file-system call failed.
    Io(io::Error),
}

impl From<Rejection> for FsError {
    fn from(r: Rejection) -> Self {
        FsError::Reject(r)
    }
}

fn io(e: Errno) -> FsError {
    FsError::Io(io::Error::from(e))
}

/// Metadata to apply to an extracted object.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Meta {
    /// Permission bits (already cleaned of setuid/setgid/sticky unless allowed).
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: Option<i64>,
    // No owner: entries always belong to the unpacking user (see [`clamp`]).
}

/// May an entry replace a non-directory already at its path? Tar: yes (last wins, like GNU
/// tar). Zip: never (duplicates are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replace {
    Never,
    NonDirectory,
}

/// Creates entries under one root directory descriptor.
pub(super) struct Extractor {
    root: OwnedFd,
    /// Open descriptors of the last directory walked and its ancestors (`stack[i]` is the
    /// directory at the first `i + 1` components), so an entry next to the previous one costs
    /// no extra `openat` and at most `MAX_DEPTH` descriptors are open.
    stack: Vec<(Vec<u8>, OwnedFd)>,
    /// Directory metadata applied by [`Extractor::finish`]; the last entry for a path wins.
    deferred: HashMap<Vec<Vec<u8>>, Meta>,
    buf: Vec<u8>,
    /// Directories created, explicit or implied.
    pub created_dirs: u64,
}

impl Extractor {
    pub(super) fn new(root: OwnedFd) -> Self {
        Self {
            root,
            stack: Vec::new(),
            deferred: HashMap::new(),
            buf: vec![0; COPY_BUFFER],
            created_dirs: 0,
        }
    }

    /// Opens the directory at `comps` (creating missing ones as 0755 when `create`), reusing
    /// the open descriptors of the longest common prefix with the previous walk.
    fn walk(&mut self, comps: &[Vec<u8>], create: bool) -> Result<BorrowedFd<'_>, FsError> {
        let common = self
            .stack
            .iter()
            .zip(comps)
            .take_while(|((open, _), want)| open == *want)
            .count();
        self.stack.truncate(common);
        for i in common..comps.len() {
            let fd = {
                let dir = self
                    .stack
                    .last()
                    .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
                let opened = match open_dir(dir, &comps[i]) {
                    Some(r) => r,
                    None if create => {
                        match mkdirat(dir, comps[i].as_slice(), Mode::from_bits_truncate(0o755)) {
                            Ok(()) => {
                                self.created_dirs += 1;
                                self.deferred.entry(comps[..=i].to_vec()).or_insert(Meta {
                                    mode: 0o755,
                                    ..Meta::default()
                                });
                            }
                            Err(Errno::EEXIST) => {}
                            Err(e) => return Err(io(e)),
                        }
                        open_dir(dir, &comps[i]).unwrap_or(Err(Errno::ENOENT))
                    }
                    None => {
                        return Err(Rejection::Missing(join(&comps[..=i]).into()).into());
                    }
                };
                classify_open(opened, &comps[..=i], dir)?
            };
            self.stack.push((comps[i].clone(), fd));
        }
        Ok(self
            .stack
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd()))
    }

    /// The parent directory of an entry, created as needed.
    fn parent(&mut self, parent: &[Vec<u8>]) -> Result<BorrowedFd<'_>, FsError> {
        self.walk(parent, true)
    }

    /// Creates a directory entry (or accepts an existing directory) and records its metadata.
    pub(super) fn dir(&mut self, path: &RelPath, meta: Meta) -> Result<(), FsError> {
        let Some((name, parent)) = path.split_last() else {
            // `./`: like GNU tar, its mode and time go to the target itself.
            self.deferred.insert(Vec::new(), meta);
            return Ok(());
        };
        let pfd = self.parent(parent)?;
        let created = match mkdirat(pfd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => {
                let st = fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(Rejection::NotADirectory(path.to_bytes().into()).into());
                }
                false
            }
            Err(e) => return Err(io(e)),
        };
        if created {
            self.created_dirs += 1;
        }
        self.deferred.insert(path.components().to_vec(), meta);
        Ok(())
    }

    /// Writes a regular file from `data`, which must yield exactly `declared` bytes.
    /// Returns the number of bytes written.
    pub(super) fn file(
        &mut self,
        path: &RelPath,
        meta: Meta,
        data: &mut dyn Read,
        declared: u64,
        replace: Replace,
    ) -> Result<u64, FsError> {
        let Some((name, parent)) = path.split_last() else {
            return Err(Rejection::NamesRoot.into());
        };
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| {
            let pfd = self.parent(parent)?;
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let mut tries = 0;
            let fd = loop {
                match openat(pfd, name, flags, Mode::from_bits_truncate(0o600)) {
                    Ok(fd) => break fd,
                    Err(Errno::EEXIST) if tries == 0 => {
                        make_room(pfd, name, path, replace)?;
                        tries += 1;
                    }
                    Err(e) => return Err(io(e)),
                }
            };
            let mut out = File::from(fd);
            let written = copy_exact(data, &mut out, &mut buf, declared)?;
            apply_meta_fd(out.as_fd(), meta)?;
            Ok(written)
        })();
        self.buf = buf;
        result
    }

    /// Creates a symlink holding `target` verbatim; it is never followed.
    pub(super) fn symlink(
        &mut self,
        path: &RelPath,
        target: &[u8],
        meta: Meta,
        replace: Replace,
    ) -> Result<(), FsError> {
        let Some((name, parent)) = path.split_last() else {
            return Err(Rejection::NamesRoot.into());
        };
        let meta = clamp(meta);
        let pfd = self.parent(parent)?;
        let mut tries = 0;
        loop {
            match symlinkat(target, pfd, name) {
                Ok(()) => break,
                Err(Errno::EEXIST) if tries == 0 => {
                    make_room(pfd, name, path, replace)?;
                    tries += 1;
                }
                Err(e) => return Err(io(e)),
            }
        }
        if let Some(mtime) = meta.mtime {
            utimensat(
                pfd,
                name,
                &TimeSpec::UTIME_NOW,
                &TimeSpec::new(mtime, 0),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(io)?;
        }
        Ok(())
    }

    /// Hard-links `path` to `target`, which must be a regular file already extracted.
    pub(super) fn hardlink(
        &mut self,
        path: &RelPath,
        target: &RelPath,
        replace: Replace,
    ) -> Result<(), FsError> {
        let Some((name, parent)) = path.split_last() else {
            return Err(Rejection::NamesRoot.into());
        };
        let link_error = |why: &'static str| {
            FsError::Reject(Rejection::HardLink {
                target: target.to_bytes().into(),
                why,
            })
        };
        let Some((tname, tparent)) = target.split_last() else {
            return Err(link_error("is the bundle root"));
        };
        if path == target {
            return Err(link_error("is the entry itself"));
        }
        let tdir = match self.walk(tparent, false) {
            Ok(fd) => fd.try_clone_to_owned().map_err(FsError::Io)?,
            Err(FsError::Reject(Rejection::Missing(_))) => {
                return Err(link_error("has not been extracted before it"));
            }
            Err(e) => return Err(e),
        };
        match fstatat(&tdir, tname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
            Ok(_) => return Err(link_error("is not a regular file")),
            Err(Errno::ENOENT) => return Err(link_error("has not been extracted before it")),
            Err(e) => return Err(io(e)),
        }
        let pfd = self.parent(parent)?;
        let mut tries = 0;
        loop {
            match linkat(&tdir, tname, pfd, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) if tries == 0 => {
                    make_room(pfd, name, path, replace)?;
                    tries += 1;
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Applies deferred directory modes and times, deepest first.
    pub(super) fn finish(mut self) -> Result<(), (RelPath, FsError)> {
        let mut dirs: Vec<(Vec<Vec<u8>>, Meta)> =
            std::mem::take(&mut self.deferred).into_iter().collect();
        dirs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for (comps, meta) in dirs {
            let applied = self
                .walk(&comps, false)
                .and_then(|fd| apply_meta_fd(fd, meta));
            if let Err(e) = applied {
                return Err((RelPath::from_components(comps), e));
            }
        }
        Ok(())
    }
}

/// Opens `name` in `dir` as a directory without following a symlink. `Ok(None)` if absent;
/// other failures are returned raw for [`classify_open`].
fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Option<Result<OwnedFd, Errno>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Some(Ok(fd)),
        Err(Errno::ENOENT) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Turns the outcome of [`open_dir`] into a descriptor or a precise rejection.
fn classify_open(
    opened: Result<OwnedFd, Errno>,
    comps: &[Vec<u8>],
    parent: BorrowedFd<'_>,
) -> Result<OwnedFd, FsError> {
    match opened {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            let name = comps.last().map_or(&[][..], |c| c.as_slice());
            let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                Err(Rejection::ThroughSymlink(join(comps).into()).into())
            } else {
                Err(Rejection::NotADirectory(join(comps).into()).into())
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// Something already exists at `name`: remove it if `replace` allows, else refuse.
fn make_room(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &RelPath,
    replace: Replace,
) -> Result<(), FsError> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(Rejection::ReplacesDirectory.into());
    }
    if replace == Replace::Never {
        return Err(Rejection::Duplicate.into());
    }
    tracing::debug!(entry = %path.to_bytes().escape_ascii(), "replacing an earlier entry of the same name");
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io)
}

/// Copies exactly `declared` bytes from `data` to `out` through `buf`, never reading more than
/// `declared` bytes plus a one-byte probe. More data than declared or less are both refused.
fn copy_exact(
    data: &mut dyn Read,
    out: &mut File,
    buf: &mut [u8],
    declared: u64,
) -> Result<u64, FsError> {
    let mut total: u64 = 0;
    loop {
        let left = declared - total;
        if left == 0 {
            let mut probe = [0u8; 1];
            match read_retry(data, &mut probe) {
                Ok(0) => return Ok(total),
                Ok(_) => return Err(Rejection::LargerThanDeclared { declared }.into()),
                Err(e) => return Err(FsError::Read(e)),
            }
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = read_retry(data, &mut buf[..want]).map_err(FsError::Read)?;
        if n == 0 {
            return Err(Rejection::Truncated {
                declared,
                got: total,
            }
            .into());
        }
        out.write_all(&buf[..n]).map_err(FsError::Io)?;
        total += n as u64;
    }
}

fn read_retry(data: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match data.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The unpacked tree is the agent's own (hook scripts run from it, as root for a root agent):
/// nothing in it may be writable by another user. So no mode keeps group or other write, and
/// no entry takes the archive's owner (a `./` of mode 0777 or owned by a host user would
/// otherwise let that user replace the scripts; docs/compatibility.md).
pub(super) fn clamp(meta: Meta) -> Meta {
    Meta {
        mode: meta.mode & !0o022,
        ..meta
    }
}

/// Mode (clamped, see [`clamp`]), then times. The owner stays the unpacking user.
fn apply_meta_fd(fd: BorrowedFd<'_>, meta: Meta) -> Result<(), FsError> {
    let meta = clamp(meta);
    fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777)).map_err(io)?;
    if let Some(mtime) = meta.mtime {
        futimens(fd, &TimeSpec::UTIME_NOW, &TimeSpec::new(mtime, 0)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::revision::archive::names::normalize;

    fn extractor(dir: &Path) -> Extractor {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        Extractor::new(nix::fcntl::open(dir, flags, Mode::empty()).unwrap())
    }

    fn p(s: &str) -> RelPath {
        normalize(s.as_bytes(), false).unwrap()
    }

    fn meta() -> Meta {
        Meta {
            mode: 0o644,
            ..Meta::default()
        }
    }

    fn layout() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (tmp, root, outside)
    }

    fn is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn a_symlink_that_appears_on_disk_is_not_written_through() {
        let (_tmp, root, outside) = layout();
        let mut x = extractor(&root);
        symlink(&outside, root.join("a")).unwrap();
        let err = x
            .file(
                &p("a/x"),
                meta(),
                &mut &b"evil"[..],
                4,
                Replace::NonDirectory,
            )
            .unwrap_err();
        assert!(
            matches!(err, FsError::Reject(Rejection::ThroughSymlink(_))),
            "{err:?}"
        );
        let err = x.dir(&p("a/d"), meta()).unwrap_err();
        assert!(
            matches!(err, FsError::Reject(Rejection::ThroughSymlink(_))),
            "{err:?}"
        );
        assert!(is_empty(&outside));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_way_is_not_followed() {
        let (_tmp, root, outside) = layout();
        let mut x = extractor(&root);
        x.file(&p("a/x"), meta(), &mut &b"1"[..], 1, Replace::NonDirectory)
            .unwrap();
        std::fs::rename(root.join("a"), root.join("a-old")).unwrap();
        symlink(&outside, root.join("a")).unwrap();
        // The open descriptor is the real directory, now `a-old`, still inside the root.
        x.file(&p("a/y"), meta(), &mut &b"2"[..], 1, Replace::NonDirectory)
            .unwrap();
        assert!(root.join("a-old/y").exists());
        // A fresh walk meets the symlink and refuses it.
        x.stack.clear();
        let err = x
            .file(&p("a/z"), meta(), &mut &b"3"[..], 1, Replace::NonDirectory)
            .unwrap_err();
        assert!(
            matches!(err, FsError::Reject(Rejection::ThroughSymlink(_))),
            "{err:?}"
        );
        assert!(is_empty(&outside));
    }

    #[test]
    fn data_longer_or_shorter_than_declared_is_refused() {
        let (_tmp, root, _outside) = layout();
        let mut x = extractor(&root);
        let err = x
            .file(&p("long"), meta(), &mut &b"12345"[..], 3, Replace::Never)
            .unwrap_err();
        assert!(matches!(
            err,
            FsError::Reject(Rejection::LargerThanDeclared { declared: 3 })
        ));
        assert_eq!(std::fs::metadata(root.join("long")).unwrap().len(), 3);
        let err = x
            .file(&p("short"), meta(), &mut &b"12"[..], 3, Replace::Never)
            .unwrap_err();
        assert!(matches!(
            err,
            FsError::Reject(Rejection::Truncated {
                declared: 3,
                got: 2
            })
        ));
    }
}
