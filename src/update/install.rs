//! Putting a verified release in place: the tarball is downloaded beside the binary and its
//! SHA-256 checked against `SHA256SUMS` before anything is unpacked; the binary is written
//! beside the running one (`.<name>.new`), fsynced, made to print its version, and only then
//! renamed over it, the old one hard-linked to `<binary>.prev` first so the path always holds a
//! complete binary and the previous one stays at hand for [`restore`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::source::{self, Source};
use super::{UpdateError, Version};

/// A binary that passed every check, waiting beside the running one.
#[derive(Debug)]
pub struct Staged {
    pub version: Version,
    pub path: PathBuf,
    /// SHA-256 of the binary itself (the new agent recognises itself by it).
    pub sha256: String,
}

/// `<binary>.prev`.
pub fn prev_path(install: &Path) -> PathBuf {
    sibling(install, "", ".prev")
}

fn sibling(install: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let mut name = OsString::from(prefix);
    name.push(install.file_name().unwrap_or_default());
    name.push(suffix);
    install.with_file_name(name)
}

/// Downloads, verifies and unpacks `version` beside `install`.
pub async fn stage(
    source: &Source,
    install: &Path,
    version: Version,
) -> Result<Staged, UpdateError> {
    let file = source::tarball_name(version);
    let url = source.url(&format!("{version}/{file}"));
    let expected = source.checksum(version, &file).await?;
    let download = sibling(install, ".", &format!(".download.{}", std::process::id()));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UpdateError::Install { path, source }
    };
    let mut out = create_private(&download, 0o600).map_err(io_err(&download))?;
    let actual = source.download(&url, &mut out).await;
    drop(out);
    let result = (|| {
        let actual = actual?;
        if actual != expected {
            return Err(UpdateError::Checksum {
                file: url.clone(),
                expected,
                actual,
            });
        }
        tracing::info!(url = %url, sha256 = %actual, "release downloaded and verified");
        let new = sibling(install, ".", ".new");
        let _ = fs::remove_file(&new);
        let mut bin = create_private(&new, 0o755).map_err(io_err(&new))?;
        source::extract_binary(&download, &mut bin)?;
        bin.sync_all().map_err(io_err(&new))?;
        drop(bin);
        if let Err(message) = runs(&new) {
            let _ = fs::remove_file(&new);
            return Err(UpdateError::BadBinary { path: new, message });
        }
        let sha256 = source::sha256_file(&new).map_err(io_err(&new))?;
        Ok(Staged {
            version,
            path: new,
            sha256,
        })
    })();
    let _ = fs::remove_file(&download);
    result
}

fn create_private(path: &Path, mode: u32) -> std::io::Result<File> {
    let _ = fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `<new> --version` exits 0 and prints `codedeploy-agent …` within 10 s: the file is an
/// executable for this machine.
fn runs(new: &Path) -> Result<(), String> {
    let mut child = Command::new(new)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                return if status.success() && out.starts_with("codedeploy-agent") {
                    Ok(())
                } else {
                    Err(format!("--version gave {status} and {:?}", out.trim()))
                };
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("--version did not answer within 10 s".into());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Puts the staged binary at `install`, the old one at `<install>.prev`.
pub fn swap(install: &Path, staged: &Staged) -> Result<(), UpdateError> {
    let err = |source| UpdateError::Install {
        path: install.to_path_buf(),
        source,
    };
    let prev = prev_path(install);
    let prev_tmp = sibling(install, ".", ".prev.tmp");
    let _ = fs::remove_file(&prev_tmp);
    fs::hard_link(install, &prev_tmp).map_err(err)?;
    fs::rename(&prev_tmp, &prev).map_err(err)?;
    fs::rename(&staged.path, install).map_err(err)?;
    sync_dir(install).map_err(err)?;
    tracing::info!(
        binary = %install.display(),
        previous = %prev.display(),
        version = %staged.version,
        "new agent binary in place"
    );
    Ok(())
}

/// Puts `<install>.prev` back at `install`.
pub fn restore(install: &Path) -> std::io::Result<()> {
    fs::rename(prev_path(install), install)?;
    sync_dir(install)
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_keeps_the_old_binary_and_restore_puts_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let install = dir.path().join("codedeploy-agent");
        fs::write(&install, "old").expect("old");
        let new = sibling(&install, ".", ".new");
        fs::write(&new, "new").expect("new");
        let staged = Staged {
            version: Version(9, 9, 9),
            path: new.clone(),
            sha256: String::new(),
        };
        swap(&install, &staged).expect("swap");
        assert_eq!(fs::read_to_string(&install).expect("read"), "new");
        assert_eq!(
            fs::read_to_string(prev_path(&install)).expect("prev"),
            "old"
        );
        assert!(!new.exists());
        restore(&install).expect("restore");
        assert_eq!(fs::read_to_string(&install).expect("read"), "old");
        assert!(!prev_path(&install).exists());
    }
}
