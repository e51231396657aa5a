//! Applying `permissions` to installed paths with syscalls, never a process per file:
//! modes (`fchmodat`), owners (`fchownat`, no symlink following), POSIX ACLs (the
//! `system.posix_acl_access` / `system.posix_acl_default` extended attributes, the same
//! binary format `setfacl` writes), and SELinux contexts (one `semanage import` and one
//! `restorecon` per batch of paths, because policy changes have no syscall).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::stat::FileStat;
use nix::unistd::{Gid, Group, Uid, User};

use crate::deploy::dest::{self, DestWalker, Trust, WalkError};

use crate::appspec::{AclEntry, AclKind, SeContext};

/// Why a permission could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "The deployment failed because the user {user} named as owner for {path} does not exist \
         on this instance. Create the user or fix the permissions section of the AppSpec file."
    )]
    UnknownUser { user: String, path: PathBuf },
    #[error(
        "The deployment failed because the group {group} named for {path} does not exist on \
         this instance. Create the group or fix the permissions section of the AppSpec file."
    )]
    UnknownGroup { group: String, path: PathBuf },
    #[error("could not {what} {path}: {source}")]
    Syscall {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "The deployment failed because of a problem with the acls permission settings in the \
         application specification file for this object: {path}. {reason}"
    )]
    Acl { path: PathBuf, reason: String },
    #[error(
        "The deployment failed because the application specification file contains an error in \
         the settings for the context parameter. Failed command: {command}. Exit code: {status}"
    )]
    Context { command: String, status: String },
}

/// Caches user and group lookups: a 100k-file install asks for the same owner 100k times.
#[derive(Debug, Default)]
pub struct IdCache {
    users: HashMap<String, Option<Uid>>,
    groups: HashMap<String, Option<Gid>>,
}

impl IdCache {
    pub fn uid(&mut self, name: &str, path: &Path) -> Result<Uid, PermissionError> {
        let found = self
            .users
            .entry(name.to_owned())
            .or_insert_with(|| User::from_name(name).ok().flatten().map(|u| u.uid));
        found.ok_or_else(|| PermissionError::UnknownUser {
            user: name.into(),
            path: path.into(),
        })
    }

    pub fn gid(&mut self, name: &str, path: &Path) -> Result<Gid, PermissionError> {
        let found = self
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| Group::from_name(name).ok().flatten().map(|g| g.gid));
        found.ok_or_else(|| PermissionError::UnknownGroup {
            group: name.into(),
            path: path.into(),
        })
    }
}

fn walk_err(path: &Path) -> impl FnOnce(WalkError) -> PermissionError + use<> {
    let path = path.to_path_buf();
    move |e| PermissionError::Syscall {
        what: "reach",
        path,
        source: io::Error::other(e.to_string()),
    }
}

fn sys_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PermissionError + use<> {
    let path = path.to_path_buf();
    move |source| PermissionError::Syscall { what, path, source }
}

/// Sets the mode of `path`, reached through descriptors ([`DestWalker`]) and changed through
/// an `O_PATH | O_NOFOLLOW` descriptor of it, so a name swapped for a symlink at any moment
/// cannot redirect the change. Symlinks have no mode of their own on Linux and are skipped.
pub fn chmod(walker: &mut DestWalker, path: &Path, bits: u32) -> Result<(), PermissionError> {
    let (dir, name) = walker.parent(path).map_err(walk_err(path))?;
    dest::chmod_at(dir, name, bits)
        .map(drop)
        .map_err(sys_err("chmod", path))
}

/// Changes owner and/or group of `path` itself (`fchownat` on its parent's descriptor, a
/// symlink is changed, not followed).
pub fn chown(
    walker: &mut DestWalker,
    path: &Path,
    uid: Option<Uid>,
    gid: Option<Gid>,
) -> Result<(), PermissionError> {
    let (dir, name) = walker.parent(path).map_err(walk_err(path))?;
    nix::unistd::fchownat(
        dir,
        name,
        uid,
        gid,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| PermissionError::Syscall {
        what: "chown",
        path: path.into(),
        source: io::Error::from(e),
    })
}

// Tags and layout of the kernel's POSIX ACL xattr (include/uapi/linux/posix_acl_xattr.h).
const ACL_XATTR_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Completes an appspec ACL the way the AWS agent does before `setfacl --set`: base entries
/// from the file's current mode, a mask equal to the group bits when named entries have none,
/// and default base entries (plus a default mask from the default group entry) when any
/// default entry is given.
pub fn complete_acl(entries: &[AclEntry], mode: u32) -> Vec<AclEntry> {
    let owner = ((mode >> 6) & 7) as u8;
    let group = ((mode >> 3) & 7) as u8;
    let other = (mode & 7) as u8;
    let base = |default: bool, kind: AclKind, perm: u8| AclEntry {
        default,
        kind,
        name: String::new(),
        perm,
    };
    let mut out: Vec<AclEntry> = entries.to_vec();
    let has = |out: &[AclEntry], default: bool, kind: AclKind, named: bool| {
        out.iter()
            .any(|e| e.default == default && e.kind == kind && e.name.is_empty() != named)
    };
    out.push(base(false, AclKind::User, owner));
    out.push(base(false, AclKind::Group, group));
    out.push(base(false, AclKind::Other, other));
    let access_named = out.iter().any(|e| !e.default && !e.name.is_empty());
    if access_named && !has(&out, false, AclKind::Mask, false) {
        out.push(base(false, AclKind::Mask, group));
    }
    if out.iter().any(|e| e.default) {
        if !has(&out, true, AclKind::User, false) {
            out.push(base(true, AclKind::User, owner));
        }
        if !has(&out, true, AclKind::Group, false) {
            out.push(base(true, AclKind::Group, group));
        }
        if !has(&out, true, AclKind::Other, false) {
            out.push(base(true, AclKind::Other, other));
        }
        let default_named = out.iter().any(|e| e.default && !e.name.is_empty());
        if default_named && !has(&out, true, AclKind::Mask, false) {
            let perm = out
                .iter()
                .find(|e| e.default && e.kind == AclKind::Group && e.name.is_empty())
                .map_or(group, |e| e.perm);
            out.push(base(true, AclKind::Mask, perm));
        }
    }
    out
}

/// Encodes one ACL (all access or all default entries) in the kernel's xattr format, entries
/// sorted by tag and id as the kernel requires. Later duplicates replace earlier ones.
fn encode_acl(
    entries: &[&AclEntry],
    ids: &mut IdCache,
    path: &Path,
) -> Result<Vec<u8>, PermissionError> {
    let mut items: Vec<(u16, u32, u16)> = Vec::with_capacity(entries.len());
    for e in entries {
        let (tag, id) = match (e.kind, e.name.is_empty()) {
            (AclKind::User, true) => (ACL_USER_OBJ, ACL_UNDEFINED_ID),
            (AclKind::User, false) => (ACL_USER, ids.uid(&e.name, path)?.as_raw()),
            (AclKind::Group, true) => (ACL_GROUP_OBJ, ACL_UNDEFINED_ID),
            (AclKind::Group, false) => (ACL_GROUP, ids.gid(&e.name, path)?.as_raw()),
            (AclKind::Mask, _) => (ACL_MASK, ACL_UNDEFINED_ID),
            (AclKind::Other, _) => (ACL_OTHER, ACL_UNDEFINED_ID),
        };
        match items.iter_mut().find(|(t, i, _)| *t == tag && *i == id) {
            Some(item) => item.2 = u16::from(e.perm),
            None => items.push((tag, id, u16::from(e.perm))),
        }
    }
    items.sort_by_key(|&(tag, id, _)| (tag, id));
    let mut out = Vec::with_capacity(4 + 8 * items.len());
    out.extend_from_slice(&ACL_XATTR_VERSION.to_le_bytes());
    for (tag, id, perm) in items {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// Sets an xattr on the object `fd` holds (`setxattr` on `/proc/self/fd/N`, or `fsetxattr`
/// on a checked reopen where `/proc` is missing).
fn set_xattr(
    obj: (BorrowedFd<'_>, &OsStr, BorrowedFd<'_>, &FileStat),
    path: &Path,
    name: &str,
    value: &[u8],
) -> Result<(), PermissionError> {
    let (dir, file, fd, st) = obj;
    let n = CString::new(name).expect("xattr names are static and NUL-free");
    let p = dest::proc_path(fd);
    // SAFETY: valid NUL-terminated path and name; `value` is a live slice of the given length.
    let mut rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    let mut source = io::Error::last_os_error();
    if rc != 0 && source.raw_os_error() == Some(libc::ENOENT) {
        match dest::reopen_same(dir, file, st) {
            Ok(real) => {
                // SAFETY: `real` is an open descriptor; as above for name and value.
                rc = unsafe {
                    libc::fsetxattr(
                        real.as_raw_fd(),
                        n.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                };
                source = io::Error::last_os_error();
            }
            Err(e) => source = e,
        }
    }
    if rc != 0 {
        return Err(PermissionError::Acl {
            path: path.into(),
            reason: format!("Setting the {name} extended attribute failed: {source}"),
        });
    }
    Ok(())
}

/// Replaces the ACL of `path` (like `setfacl --set`), through descriptors as [`chmod`].
/// Symlinks are skipped.
pub fn set_acl(
    walker: &mut DestWalker,
    path: &Path,
    acl: &[AclEntry],
    ids: &mut IdCache,
) -> Result<(), PermissionError> {
    let (dir, name) = walker.parent(path).map_err(walk_err(path))?;
    let Some((fd, st)) = dest::open_object(dir, name).map_err(sys_err("open", path))? else {
        return Ok(());
    };
    let obj = (dir, name, fd.as_fd(), &st);
    let full = complete_acl(acl, st.st_mode);
    let access: Vec<&AclEntry> = full.iter().filter(|e| !e.default).collect();
    let default: Vec<&AclEntry> = full.iter().filter(|e| e.default).collect();
    set_xattr(
        obj,
        path,
        "system.posix_acl_access",
        &encode_acl(&access, ids, path)?,
    )?;
    if !default.is_empty() {
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(PermissionError::Acl {
                path: path.into(),
                reason: "Default ACL entries can only be set on directories.".into(),
            });
        }
        set_xattr(
            obj,
            path,
            "system.posix_acl_default",
            &encode_acl(&default, ids, path)?,
        )?;
    }
    Ok(())
}

/// Decodes an ACL xattr back to canonical entries (for tests and `plan`).
pub fn read_acl(path: &Path, default: bool) -> io::Result<Vec<String>> {
    let name = if default {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    };
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let n = CString::new(name).expect("static name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings; `buf` is writable for its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    buf.truncate(len as usize);
    let mut out = Vec::new();
    for item in buf.get(4..).unwrap_or_default().chunks_exact(8) {
        let tag = u16::from_le_bytes([item[0], item[1]]);
        let perm = u16::from_le_bytes([item[2], item[3]]) as u8;
        let id = u32::from_le_bytes([item[4], item[5], item[6], item[7]]);
        let (kind, name) = match tag {
            ACL_USER_OBJ => ("user", String::new()),
            ACL_USER => (
                "user",
                User::from_uid(Uid::from_raw(id))
                    .ok()
                    .flatten()
                    .map_or(id.to_string(), |u| u.name),
            ),
            ACL_GROUP_OBJ => ("group", String::new()),
            ACL_GROUP => (
                "group",
                Group::from_gid(Gid::from_raw(id))
                    .ok()
                    .flatten()
                    .map_or(id.to_string(), |g| g.name),
            ),
            ACL_MASK => ("mask", String::new()),
            _ => ("other", String::new()),
        };
        let entry = AclEntry {
            default,
            kind: match kind {
                "user" => AclKind::User,
                "group" => AclKind::Group,
                "mask" => AclKind::Mask,
                _ => AclKind::Other,
            },
            name,
            perm,
        };
        out.push(entry.to_string());
    }
    Ok(out)
}

/// Applies one SELinux context to many paths with one `semanage import` and one `restorecon`.
/// Returns the real paths the policy now covers (for the cleanup file).
///
/// `restorecon` relabels by path, so each path is first reached through descriptors (trusted
/// symlinks only), its real path is read back from the parent's descriptor, and it is handed
/// to `restorecon` only when no directory on that real path can be changed by another user
/// (owned by root or the agent's user, no group/other write unless sticky): then nobody can
/// swap a component between this check and `restorecon`'s lookup. Otherwise the context is
/// refused with a message naming the directory.
pub fn set_context(
    walker: &mut DestWalker,
    context: &SeContext,
    paths: &[PathBuf],
) -> Result<Vec<PathBuf>, PermissionError> {
    let mut real = Vec::with_capacity(paths.len());
    let mut script = String::new();
    for p in paths {
        let rp = safe_real_path(walker, p)?;
        script.push_str("fcontext -a");
        if let Some(user) = &context.user {
            script.push_str(&format!(" -s {user}"));
        }
        script.push_str(&format!(" -t {}", context.type_));
        if let Some(range) = &context.range {
            script.push_str(&format!(" -r {range}"));
        }
        script.push_str(&format!(" '{}'\n", rp.display()));
        real.push(rp);
    }
    run_with_stdin("semanage", &["import"], &script)?;
    let mut args: Vec<String> = vec!["-v".into()];
    args.extend(real.iter().map(|p| p.display().to_string()));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with_stdin("restorecon", &arg_refs, "")?;
    Ok(real)
}

/// The real path of `path` for an external tool, or why an external tool could be redirected.
fn safe_real_path(walker: &mut DestWalker, path: &Path) -> Result<PathBuf, PermissionError> {
    let trust = walker.trust();
    let (dir, name) = walker.parent(path).map_err(walk_err(path))?;
    let parent = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(sys_err("resolve", path))?;
    let real = parent.join(name);
    unsafe_dir_on(&parent, trust).map_or(Ok(real), |d| {
        Err(PermissionError::Syscall {
            what: "set the SELinux context of",
            path: path.into(),
            source: io::Error::other(format!(
                "{} can be changed by another user, so restorecon could be redirected by a \
                 symlink swapped in; make it owned by root and not group- or world-writable",
                d.display()
            )),
        })
    })
}

/// The first directory from `/` down to `dir` (a real path) that another user could change, or
/// a symlink on it (which a real path has none of unless it changed since).
pub(crate) fn unsafe_dir_on(dir: &Path, trust: Trust) -> Option<PathBuf> {
    let mut cur = PathBuf::from("/");
    let check = |p: &Path| -> bool {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                let writable = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
                trust.trusted_owner(m.uid()) && !writable
            }
            _ => false,
        }
    };
    if !check(&cur) {
        return Some(cur);
    }
    for c in dir.components().skip(1) {
        cur.push(c);
        if !check(&cur) {
            return Some(cur);
        }
    }
    None
}

/// Removes a context rule recorded in the cleanup file; the exit status is ignored, as the AWS
/// agent ignores it.
pub fn remove_context(path: &Path) {
    let _ = Command::new("semanage")
        .args(["fcontext", "-d"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Result<(), PermissionError> {
    use std::io::Write;
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| PermissionError::Context {
            command: command.clone(),
            status: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let status = child.wait().map_err(|e| PermissionError::Context {
        command: command.clone(),
        status: e.to_string(),
    })?;
    if !status.success() {
        return Err(PermissionError::Context {
            command,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// The tests' one rule for a missing tool (skip on a developer's machine, fail under `CI=true`).
#[cfg(test)]
#[path = "../../tests/support/require.rs"]
mod require;

#[cfg(test)]
mod tests {
    use super::*;

    fn walker() -> DestWalker {
        DestWalker::new(Trust::now()).expect("walker")
    }

    #[test]
    fn an_external_tool_gets_a_path_only_when_no_directory_on_it_is_writable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let trust = Trust::now();
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let safe = dir.path().join("safe");
        std::fs::create_dir(&safe).expect("mkdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(unsafe_dir_on(&safe, trust), None);
        std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(unsafe_dir_on(&safe, trust), Some(safe.clone()));
    }

    fn ace(s: &str) -> AclEntry {
        let default = s.starts_with("default:");
        let s = s.trim_start_matches("default:");
        let mut parts = s.split(':');
        let kind = match parts.next() {
            Some("user") => AclKind::User,
            Some("group") => AclKind::Group,
            Some("mask") => AclKind::Mask,
            _ => AclKind::Other,
        };
        let name = parts.next().unwrap_or("").to_owned();
        let p = parts.next().unwrap_or("---").as_bytes();
        let perm =
            (u8::from(p[0] == b'r') << 2) | (u8::from(p[1] == b'w') << 1) | u8::from(p[2] == b'x');
        AclEntry {
            default,
            kind,
            name,
            perm,
        }
    }

    fn strings(v: &[AclEntry]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn completion_adds_base_entries_and_mask_like_the_aws_agent() {
        let full = complete_acl(&[ace("user:root:rw-")], 0o640);
        assert_eq!(
            strings(&full),
            [
                "user:root:rw-",
                "user::rw-",
                "group::r--",
                "other::---",
                "mask::r--"
            ]
        );
        let full = complete_acl(&[ace("default:group:root:r-x")], 0o755);
        assert_eq!(
            strings(&full),
            [
                "default:group:root:r-x",
                "user::rwx",
                "group::r-x",
                "other::r-x",
                "default:user::rwx",
                "default:group::r-x",
                "default:other::r-x",
                "default:mask::r-x"
            ]
        );
    }

    #[test]
    fn mode_and_acl_are_applied_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let mut w = walker();
        chmod(&mut w, &file, 0o640).expect("chmod");
        assert_eq!(
            std::fs::metadata(&file).expect("meta").mode() & 0o7777,
            0o640
        );
        let mut ids = IdCache::default();
        match set_acl(&mut w, &file, &[ace("user:root:rw-")], &mut ids) {
            Ok(()) => {
                let acl = read_acl(&file, false).expect("read");
                assert_eq!(
                    acl,
                    [
                        "user::rw-",
                        "user:root:rw-",
                        "group::r--",
                        "mask::r--",
                        "other::---"
                    ]
                );
            }
            // tmpfs without ACL support, or a kernel without it: nothing to check here, except
            // under CI=true, where that is a failure.
            Err(PermissionError::Acl { reason, .. })
                if reason.contains("Operation not supported") =>
            {
                super::require::missing(
                    "POSIX ACL support on the temporary directory's file system",
                    "a kernel and file system with ACLs",
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn unknown_owner_is_a_clear_error() {
        let mut ids = IdCache::default();
        let err = ids
            .uid("no-such-user-xyz", Path::new("/srv/a"))
            .expect_err("unknown");
        assert!(err.to_string().contains("no-such-user-xyz"), "{err}");
    }

    #[test]
    fn symlinks_are_not_followed_by_chmod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").expect("write");
        let mut w = walker();
        chmod(&mut w, &target, 0o600).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        chmod(&mut w, &link, 0o777).expect("chmod link");
        assert_eq!(
            std::fs::metadata(&target).expect("meta").mode() & 0o777,
            0o600
        );
    }
}
