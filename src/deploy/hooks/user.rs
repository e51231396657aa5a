//! `runas`: the target user, resolved in the parent, and the credential switch done in the
//! child between fork and exec (no `su`, no shell).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::unistd::{Gid, User};

/// Why a `runas` user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserLookupError {
    #[error("there is no user named {0:?} in the passwd database")]
    UnknownUser(String),
    #[error("looking up user {name:?} failed: {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("looking up the groups of user {name:?} failed: {source}")]
    Groups {
        name: String,
        #[source]
        source: nix::Error,
    },
}

impl UserLookupError {
    /// The short kind used in `failed with error <kind> with message <msg>`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UserLookupError::UnknownUser(_) => "UnknownUser",
            UserLookupError::Lookup { .. } => "UserLookupFailed",
            UserLookupError::Groups { .. } => "GroupLookupFailed",
        }
    }
}

/// A user to run a script as: everything the child needs, gathered before the fork so the
/// child only makes async-signal-safe system calls.
#[derive(Debug, Clone)]
pub(crate) struct RunAsUser {
    pub(crate) name: String,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    home: PathBuf,
    shell: PathBuf,
}

impl RunAsUser {
    /// Reads the passwd entry and the supplementary groups (`getgrouplist`).
    pub(crate) fn resolve(name: &str) -> Result<Self, UserLookupError> {
        let user = User::from_name(name)
            .map_err(|source| UserLookupError::Lookup {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| UserLookupError::UnknownUser(name.to_owned()))?;
        // A name with a NUL byte cannot be in the passwd database, so from_name already
        // reported it as unknown.
        let cname =
            CString::new(name).map_err(|_| UserLookupError::UnknownUser(name.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|source| UserLookupError::Groups {
                name: name.to_owned(),
                source,
            })?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
            shell: user.shell,
        })
    }

    /// Makes `cmd` run as this user: HOME, USER, LOGNAME and SHELL from the passwd entry, then
    /// setgroups, setgid, setuid in the child. Needs the agent to be root.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("SHELL", &self.shell);
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        let switch = move || {
            // SAFETY: `groups` outlives the call and its length matches the pointer.
            if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: plain system calls on integers.
            if unsafe { libc::setgid(gid) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: as above.
            if unsafe { libc::setuid(uid) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure runs in the child between fork and exec. It only calls
        // setgroups, setgid and setuid (async-signal-safe system calls) on data prepared in the
        // parent, allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(switch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_with_its_passwd_entry() {
        let root = RunAsUser::resolve("root").expect("every Linux system has root");
        assert_eq!(root.uid, 0);
        assert_eq!(root.gid, 0);
        assert!(root.groups.contains(&0));
    }

    #[test]
    fn an_unknown_user_is_reported_by_name() {
        let err = RunAsUser::resolve("no-such-user-cd").expect_err("user should not exist");
        assert_eq!(err.kind(), "UnknownUser");
        assert!(err.to_string().contains("\"no-such-user-cd\""), "{err}");
    }
}
