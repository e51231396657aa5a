//! `Local File` and `Local Directory` revisions (agent-behaviour.md §3.4): a symlink to the
//! archive as `bundle.tar`, or a copy of the directory as `deployment-archive`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::{Fetch, FetchError, Fetched};
use crate::spec::Revision;

/// Fetches local revisions; S3 and GitHub need the network clients.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFetcher;

impl Fetch for LocalFetcher {
    fn fetch(
        &self,
        revision: &Revision,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError> {
        match revision {
            Revision::LocalFile {
                location,
                bundle_type,
            } => {
                let _ = fs::remove_file(bundle_file);
                symlink(location, bundle_file).map_err(|source| FetchError::Io {
                    what: "link the bundle",
                    path: bundle_file.to_path_buf(),
                    source,
                })?;
                Ok(Fetched::Archive {
                    bundle_type: bundle_type.clone(),
                })
            }
            Revision::LocalDirectory { location, .. } => {
                copy_tree(Path::new(location), archive_dir)?;
                Ok(Fetched::Directory)
            }
            Revision::S3 { .. } => Err(FetchError::Unsupported(
                "S3 revisions are not supported by this build yet".into(),
            )),
            Revision::GitHub { .. } => Err(FetchError::Unsupported(
                "GitHub revisions are not supported by this build yet".into(),
            )),
        }
    }
}

/// Copies a directory tree like `cp -r`, keeping modes and recreating symlinks as symlinks
/// (never following them).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), FetchError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io { what, path, source }
    };
    let meta = fs::symlink_metadata(from).map_err(io("read", from))?;
    if !meta.is_dir() {
        return Err(FetchError::Other(format!(
            "{} is not a directory",
            from.display()
        )));
    }
    fs::create_dir(to).map_err(io("create", to))?;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    // Directory modes are applied last, so a read-only directory can still be filled.
    let mut dir_modes = vec![(to.to_path_buf(), meta.mode() & 0o7777)];
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in fs::read_dir(&src_dir).map_err(io("read", &src_dir))? {
            let entry = entry.map_err(io("read", &src_dir))?;
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let meta = fs::symlink_metadata(&src).map_err(io("read", &src))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&src).map_err(io("read", &src))?;
                symlink(target, &dst).map_err(io("create", &dst))?;
            } else if ft.is_dir() {
                fs::create_dir(&dst).map_err(io("create", &dst))?;
                dir_modes.push((dst.clone(), meta.mode() & 0o7777));
                stack.push((src, dst));
            } else if ft.is_file() {
                fs::copy(&src, &dst).map_err(io("copy", &src))?;
            } else {
                return Err(FetchError::Other(format!(
                    "{} is not a regular file, directory or symlink; bundles cannot carry devices, \
                     fifos or sockets",
                    src.display()
                )));
            }
        }
    }
    for (dir, mode) in dir_modes.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
            .map_err(io("set mode of", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_copy_keeps_modes_and_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("scripts")).expect("mkdir");
        fs::write(src.join("scripts/run.sh"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(
            src.join("scripts/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        symlink("/etc/passwd", src.join("link")).expect("symlink");
        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        assert_eq!(
            fs::metadata(dst.join("scripts/run.sh"))
                .expect("meta")
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.join("link")).expect("link"),
            Path::new("/etc/passwd")
        );
    }
}
