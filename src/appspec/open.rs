//! The one way every command (`validate`, `plan`, `local`, the daemon's Install and hook
//! events) opens an appspec: by name, relative to the bundle directory's descriptor, never
//! leaving the bundle (`openat2` with `RESOLVE_BENEATH`, or a manual walk with `O_NOFOLLOW` on
//! every component where the kernel has no `openat2`), a regular file only, at most
//! [`MAX_APPSPEC_BYTES`].

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fstat};

/// The largest appspec accepted. The AWS samples are a few KiB; this bounds memory and time
/// for a bundle that names a huge (or endless) file.
pub const MAX_APPSPEC_BYTES: u64 = 4 * 1024 * 1024;

/// How many symlinks one lookup may follow inside the bundle (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why an appspec that is present could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenAppSpecError {
    #[error("cannot open the bundle directory {}: {source}", dir.display())]
    Bundle {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the AppSpec file name {name:?} is not a path inside the bundle (absolute, or with `..` \
         leading out of it); name a file inside the bundle"
    )]
    OutsideName { name: String },
    #[error(
        "the AppSpec file {name} in {} is a symlink that leads out of the bundle; it is not \
         followed. Put the AppSpec file itself in the bundle",
        dir.display()
    )]
    Escapes { name: String, dir: PathBuf },
    #[error(
        "the AppSpec file {name} in {} is not a regular file; it must be a regular file",
        dir.display()
    )]
    NotRegular { name: String, dir: PathBuf },
    #[error(
        "the AppSpec file {name} in {} is larger than {} MiB; an AppSpec file must be at most \
         that large",
        dir.display(),
        MAX_APPSPEC_BYTES / (1024 * 1024)
    )]
    TooLarge { name: String, dir: PathBuf },
    #[error("the AppSpec file {name} in {} is not valid UTF-8 text", dir.display())]
    NotUtf8 { name: String, dir: PathBuf },
    #[error("cannot read the AppSpec file {name} in {}: {source}", dir.display())]
    Io {
        name: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An appspec found and read.
#[derive(Debug, Clone)]
pub struct OpenedAppSpec {
    /// The name it was found under (as given, relative to the bundle).
    pub name: String,
    /// `bundle/name`, for messages.
    pub path: PathBuf,
    pub text: String,
}

/// Looks the names up in order inside `bundle` and reads the first that exists.
/// `Ok(None)`: none of the names exists (not even as a dangling symlink). A name that exists
/// but cannot be used (leaves the bundle, not a regular file, too large) is an error at once,
/// so every command gives the same answer for one bundle.
pub fn open_appspec(
    bundle: &Path,
    names: &[&str],
) -> Result<Option<OpenedAppSpec>, OpenAppSpecError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root =
        nix::fcntl::open(bundle, flags, Mode::empty()).map_err(|e| OpenAppSpecError::Bundle {
            dir: bundle.to_path_buf(),
            source: e.into(),
        })?;
    for name in names {
        let fail = |source: Errno| OpenAppSpecError::Io {
            name: (*name).to_owned(),
            dir: bundle.to_path_buf(),
            source: source.into(),
        };
        let rel = Path::new(name);
        if rel.is_absolute() || name.is_empty() {
            return Err(OpenAppSpecError::OutsideName {
                name: (*name).to_owned(),
            });
        }
        let file = match open_beneath(root.as_fd(), rel) {
            Ok(fd) => fd,
            Err(Lookup::Missing) => continue,
            Err(Lookup::OutsideName) => {
                return Err(OpenAppSpecError::OutsideName {
                    name: (*name).to_owned(),
                });
            }
            Err(Lookup::Escapes) => {
                return Err(OpenAppSpecError::Escapes {
                    name: (*name).to_owned(),
                    dir: bundle.to_path_buf(),
                });
            }
            Err(Lookup::Errno(e)) => return Err(fail(e)),
        };
        let st = fstat(&file).map_err(fail)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(OpenAppSpecError::NotRegular {
                name: (*name).to_owned(),
                dir: bundle.to_path_buf(),
            });
        }
        let mut bytes = Vec::new();
        File::from(file)
            .take(MAX_APPSPEC_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| OpenAppSpecError::Io {
                name: (*name).to_owned(),
                dir: bundle.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_APPSPEC_BYTES {
            return Err(OpenAppSpecError::TooLarge {
                name: (*name).to_owned(),
                dir: bundle.to_path_buf(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| OpenAppSpecError::NotUtf8 {
            name: (*name).to_owned(),
            dir: bundle.to_path_buf(),
        })?;
        return Ok(Some(OpenedAppSpec {
            name: (*name).to_owned(),
            path: bundle.join(name),
            text,
        }));
    }
    Ok(None)
}

#[derive(Debug)]
enum Lookup {
    Missing,
    /// The name itself climbs out with `..`.
    OutsideName,
    /// A symlink on the way leads out.
    Escapes,
    Errno(Errno),
}

/// The final open: read-only, non-blocking (a FIFO must not hang the agent), no controlling
/// terminal.
fn final_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC
}

fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Lookup> {
    // A name that climbs out by itself is refused whatever is on disk.
    let mut depth: i32 = 0;
    for c in rel.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(Lookup::OutsideName);
        }
    }
    if !FORCE_FALLBACK.load(std::sync::atomic::Ordering::Relaxed) {
        use nix::fcntl::{OpenHow, ResolveFlag, openat2};
        let how = OpenHow::new()
            .flags(final_flags())
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(root, rel, how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => return Err(Lookup::Missing),
            Err(Errno::EXDEV) => return Err(Lookup::Escapes),
            // No openat2 (before Linux 5.6, or filtered by seccomp): walk by hand.
            Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => {}
            Err(e) => return Err(Lookup::Errno(e)),
        }
    }
    open_beneath_manual(root, rel)
}

/// Tests force the manual walk with this.
static FORCE_FALLBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The `openat2` fallback: every component opened with `O_NOFOLLOW` from the previous
/// directory's descriptor; a symlink's target is spliced in and walked the same way, refused
/// when absolute or when it climbs above the bundle.
fn open_beneath_manual(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Lookup> {
    let mut queue: VecDeque<Vec<u8>> = components(rel.as_os_str().as_bytes());
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(comp) = queue.pop_front() {
        let cur = stack.last().map_or(root, |fd| fd.as_fd());
        if comp == b".." {
            if stack.pop().is_none() {
                return Err(Lookup::Escapes);
            }
            continue;
        }
        let last = queue.is_empty();
        let flags = if last {
            final_flags() | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        match openat(cur, comp.as_slice(), flags, Mode::empty()) {
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => stack.push(fd),
            Err(Errno::ENOENT) => return Err(Lookup::Missing),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let target = match nix::fcntl::readlinkat(cur, comp.as_slice()) {
                    Ok(t) => t,
                    // Not a symlink: a file where a directory was needed.
                    Err(Errno::EINVAL) => return Err(Lookup::Errno(Errno::ENOTDIR)),
                    Err(e) => return Err(Lookup::Errno(e)),
                };
                links += 1;
                if links > MAX_LINKS {
                    return Err(Lookup::Errno(Errno::ELOOP));
                }
                let bytes = target.as_bytes();
                if bytes.starts_with(b"/") {
                    return Err(Lookup::Escapes);
                }
                for c in components(bytes).into_iter().rev() {
                    queue.push_front(c);
                }
            }
            Err(e) => return Err(Lookup::Errno(e)),
        }
    }
    // The name ended in `.` or `..`: the bundle or a directory, not a file.
    let cur = stack.last().map_or(root, |fd| fd.as_fd());
    openat(cur, ".", final_flags(), Mode::empty()).map_err(Lookup::Errno)
}

fn components(bytes: &[u8]) -> VecDeque<Vec<u8>> {
    Path::new(OsStr::from_bytes(bytes))
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn both(f: impl Fn()) {
        FORCE_FALLBACK.store(false, std::sync::atomic::Ordering::Relaxed);
        f();
        FORCE_FALLBACK.store(true, std::sync::atomic::Ordering::Relaxed);
        f();
        FORCE_FALLBACK.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn inside_links_work_and_escapes_are_refused_by_both_walks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(b.join("conf")).expect("mkdir");
        std::fs::write(b.join("conf/real.yml"), "version: 0.0\n").expect("write");
        std::fs::write(tmp.path().join("secret"), "outside\n").expect("write");
        symlink("conf/real.yml", b.join("appspec.yml")).expect("link");
        symlink("../secret", b.join("up.yml")).expect("link");
        symlink("/dev/zero", b.join("zero.yml")).expect("link");
        symlink("conf/../../secret", b.join("sneaky.yml")).expect("link");
        std::fs::create_dir(b.join("dir.yml")).expect("mkdir");
        both(|| {
            let got = open_appspec(&b, &["appspec.yml"])
                .expect("ok")
                .expect("found");
            assert_eq!(got.text, "version: 0.0\n");
            for name in ["up.yml", "zero.yml", "sneaky.yml"] {
                let e = open_appspec(&b, &[name]).expect_err(name);
                assert!(matches!(e, OpenAppSpecError::Escapes { .. }), "{name}: {e}");
            }
            let e = open_appspec(&b, &["../secret"]).expect_err("dotdot");
            assert!(matches!(e, OpenAppSpecError::OutsideName { .. }), "{e}");
            let e = open_appspec(&b, &["dir.yml"]).expect_err("dir");
            assert!(matches!(e, OpenAppSpecError::NotRegular { .. }), "{e}");
            assert!(open_appspec(&b, &["none.yml"]).expect("ok").is_none());
        });
        let e = open_appspec(&b, &["/etc/passwd"]).expect_err("absolute");
        assert!(matches!(e, OpenAppSpecError::OutsideName { .. }), "{e}");
    }

    #[test]
    fn a_huge_appspec_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = File::create(tmp.path().join("appspec.yml")).expect("create");
        f.set_len(MAX_APPSPEC_BYTES + 1).expect("len");
        let e = open_appspec(tmp.path(), &["appspec.yml"]).expect_err("big");
        assert!(matches!(e, OpenAppSpecError::TooLarge { .. }), "{e}");
    }
}
