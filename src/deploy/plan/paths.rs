//! Path normalisation the way the AWS agent's `File.expand_path` does it for the paths it
//! compares: absolute, no `.` or empty components, `..` folded lexically (never above `/`),
//! no trailing slash.
//!
//! Difference: a relative path is taken relative to `/`, not to the agent's working directory.
//! Under the shipped systemd unit that directory is `/`, so the results agree there.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Lexically normalises `path` to an absolute path (see the module doc).
pub(super) fn expand(path: &Path) -> PathBuf {
    let mut out: Vec<u8> = Vec::with_capacity(path.as_os_str().len() + 1);
    for component in path.as_os_str().as_bytes().split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|b| *b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            name => {
                out.push(b'/');
                out.extend_from_slice(name);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    PathBuf::from(OsString::from_vec(out))
}

/// `path`'s bytes followed by `/`, or just `/` for the root: every path strictly under `path`
/// starts with this.
pub(super) fn dir_prefix(path: &Path) -> Vec<u8> {
    let mut prefix = path.as_os_str().as_bytes().to_vec();
    if prefix.last() != Some(&b'/') {
        prefix.push(b'/');
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_like_ruby() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            (".", "/"),
            ("/etc/app/", "/etc/app"),
            ("/etc//app/./x", "/etc/app/x"),
            ("/etc/app/../x", "/etc/x"),
            ("/../../x", "/x"),
            ("/a/..", "/"),
            ("srv/app", "/srv/app"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(Path::new(input)), Path::new(want), "{input:?}");
        }
    }

    #[test]
    fn dir_prefixes() {
        assert_eq!(dir_prefix(Path::new("/")), b"/");
        assert_eq!(dir_prefix(Path::new("/srv/app")), b"/srv/app/");
    }
}
