//! Archive reuse for restart deployments: when the deployment specification names an earlier
//! deployment in `ReuseArchiveFromDeploymentId` (AWS's v2 agent 2.1, the `RESTART` deployment
//! mode) and `enable_archive_reuse` is on, `DownloadBundle` copies that deployment's unpacked
//! archive instead of downloading the revision again.
//!
//! Reuse is an optimisation, never the only way to the bytes: on any doubt the caller
//! downloads. The doubts, each checked before anything is trusted:
//! - the id is not a deployment id's shape (`d-` + upper-case letters and digits, at most 64
//!   characters, as v2 checks) or names the deployment itself;
//! - the named deployment has no directory in *this* deployment group (another group's
//!   archive is never looked at), or its `deployment-archive` is missing or not a directory;
//! - it has no [`ARCHIVE_RECORD_FILE`], the record of how its archive was obtained, written by
//!   the `DownloadBundle` that produced it (a download, or an earlier reuse);
//! - the record names another revision than this deployment's (S3 bucket, key, version and
//!   bundle type, or GitHub repository and commit; the ETags too when both are known);
//! - the copy does not hash to the record's digest (a file changed, added or removed since,
//!   modes or owners changed, say by a hook writing into its archive).
//!
//! A failed attempt removes what it copied, so the download starts from a clean directory.
//! Every `DownloadBundle` writes v2's `.bundle-source` marker (`downloaded` or
//! `archive-reuse`) and, while reuse is enabled, the record; the decision and its reason go
//! to the agent log and to the deployment's scripts.log and the deployments log.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::deploy::layout::{DeploymentRoot, write_atomic};
use crate::spec::{DeploymentSpec, Revision};

/// v2's marker of how the bundle was obtained: [`BundleSource::as_str`].
pub const BUNDLE_SOURCE_FILE: &str = ".bundle-source";

/// The record of the archive a `DownloadBundle` produced: revision and digest.
pub const ARCHIVE_RECORD_FILE: &str = ".archive-record";

/// The longest deployment id reuse accepts (real ones are `d-` and nine characters).
const MAX_DEPLOYMENT_ID_LEN: usize = 64;

/// How a deployment's bundle got onto the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleSource {
    Downloaded,
    ArchiveReuse,
}

impl BundleSource {
    /// v2's spelling, in `.bundle-source` and in the `BundleSource=` completion note.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleSource::Downloaded => "downloaded",
            BundleSource::ArchiveReuse => "archive-reuse",
        }
    }
}

/// What [`ARCHIVE_RECORD_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// [`revision_identity`] of the revision the archive came from.
    pub revision: String,
    /// The ETag S3 returned when it was downloaded, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Entries under `deployment-archive` (files, directories, symlinks).
    pub entries: u64,
    /// [`tree_digest`] of `deployment-archive`.
    pub sha256: String,
}

/// True for a deployment id of the shape v2 accepts for reuse: `d-` and one or more upper-case
/// ASCII letters or digits, 64 characters at most. Anything else is never made into a path.
pub fn is_valid_deployment_id(id: &str) -> bool {
    id.len() <= MAX_DEPLOYMENT_ID_LEN
        && id.strip_prefix("d-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// The revision as one comparable string (ETag left out: it is compared only when both sides
/// know it).
pub fn revision_identity(revision: &Revision) -> String {
    let value = match revision {
        Revision::S3 {
            bucket,
            key,
            bundle_type,
            version,
            ..
        } => {
            serde_json::json!({"S3": {"Bucket": bucket, "Key": key, "Version": version, "BundleType": bundle_type}})
        }
        Revision::GitHub {
            account,
            repository,
            commit_id,
            bundle_type,
        } => {
            serde_json::json!({"GitHub": {"Account": account, "Repository": repository, "CommitId": commit_id, "BundleType": bundle_type}})
        }
        Revision::LocalFile {
            location,
            bundle_type,
        } => serde_json::json!({"LocalFile": {"Location": location, "BundleType": bundle_type}}),
        Revision::LocalDirectory {
            location,
            bundle_type,
        } => {
            serde_json::json!({"LocalDirectory": {"Location": location, "BundleType": bundle_type}})
        }
    };
    value.to_string()
}

fn spec_etag(revision: &Revision) -> Option<String> {
    match revision {
        Revision::S3 { etag: Some(e), .. } => Some(e.trim_matches('"').to_owned()),
        _ => None,
    }
}

/// A digest of the tree under `dir`: every entry in name order with its type, path, mode,
/// owner and group, a file's size and SHA-256, a symlink's target. Symlinks are never
/// followed. Returns the number of entries and the hex digest.
pub fn tree_digest(dir: &Path) -> io::Result<(u64, String)> {
    let mut outer = ring::digest::Context::new(&ring::digest::SHA256);
    let mut entries = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut buffer = vec![0u8; 256 * 1024];
    while let Some(current) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&current)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        // Pushed in reverse so the walk visits them in name order (depth first).
        let mut subdirs = Vec::new();
        for name in names {
            let path = current.join(&name);
            let meta = fs::symlink_metadata(&path)?;
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let ft = meta.file_type();
            let kind: &[u8] = if ft.is_dir() {
                b"d"
            } else if ft.is_symlink() {
                b"l"
            } else if ft.is_file() {
                b"f"
            } else {
                return Err(io::Error::other(format!(
                    "{} is not a regular file, directory or symlink",
                    path.display()
                )));
            };
            entries += 1;
            outer.update(kind);
            outer.update(b"\0");
            outer.update(relative.as_os_str().as_bytes());
            outer.update(
                format!(
                    "\0{:o}\0{}\0{}\0",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                )
                .as_bytes(),
            );
            if ft.is_dir() {
                subdirs.push(path);
            } else if ft.is_symlink() {
                outer.update(fs::read_link(&path)?.as_os_str().as_bytes());
            } else {
                let mut file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                let mut inner = ring::digest::Context::new(&ring::digest::SHA256);
                let mut size = 0u64;
                loop {
                    let n = file.read(&mut buffer)?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    inner.update(&buffer[..n]);
                }
                outer.update(format!("{size}\0").as_bytes());
                outer.update(inner.finish().as_ref());
            }
            outer.update(b"\n");
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((entries, hex::encode(outer.finish())))
}

/// Records, after a download, how `deployment_dir`'s archive was obtained:
/// [`BUNDLE_SOURCE_FILE`] always, [`ARCHIVE_RECORD_FILE`] when `with_record` (reuse enabled).
/// Best-effort: a failure only means a later restart downloads again.
pub fn record_download(deployment_dir: &Path, revision: &Revision, with_record: bool) {
    write_source(deployment_dir, BundleSource::Downloaded);
    let record_path = deployment_dir.join(ARCHIVE_RECORD_FILE);
    let _ = fs::remove_file(&record_path);
    if !with_record {
        return;
    }
    let archive = deployment_dir.join("deployment-archive");
    let record = tree_digest(&archive).map(|(entries, sha256)| ArchiveRecord {
        revision: revision_identity(revision),
        etag: crate::revision::recorded_bundle_etag(deployment_dir),
        entries,
        sha256,
    });
    let written = record
        .and_then(|r| serde_json::to_vec(&r).map_err(io::Error::other))
        .and_then(|json| write_atomic(&record_path, &json));
    if let Err(e) = written {
        tracing::warn!(path = %record_path.display(), error = %e, "cannot record the unpacked archive's digest; a restart deployment of it will download again");
    }
}

fn write_source(deployment_dir: &Path, source: BundleSource) {
    let path = deployment_dir.join(BUNDLE_SOURCE_FILE);
    if let Err(e) = write_atomic(&path, source.as_str().as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot record how the bundle was obtained");
    }
}

/// The bundle source recorded in `deployment_dir`, if any.
pub fn recorded_source(deployment_dir: &Path) -> Option<BundleSource> {
    match fs::read_to_string(deployment_dir.join(BUNDLE_SOURCE_FILE))
        .ok()?
        .trim()
    {
        "downloaded" => Some(BundleSource::Downloaded),
        "archive-reuse" => Some(BundleSource::ArchiveReuse),
        _ => None,
    }
}

/// Why an archive was not reused: the deployment downloads instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReuseRefused(pub String);

/// Fills `<deployment dir>/deployment-archive` of `spec` from the archive of
/// `spec.reuse_archive_from_deployment_id` in the same group, if every check of the module
/// holds. On `Err` nothing of the attempt is left behind.
pub fn reuse_archive(root: &DeploymentRoot, spec: &DeploymentSpec) -> Result<(), ReuseRefused> {
    let refuse = |m: String| Err(ReuseRefused(m));
    let Some(source_id) = spec.reuse_archive_from_deployment_id.as_deref() else {
        return refuse("the specification names no deployment to reuse".into());
    };
    if !is_valid_deployment_id(source_id) {
        return refuse(format!(
            "{source_id:?} is not a deployment id (d- and upper-case letters or digits)"
        ));
    }
    if source_id == spec.deployment_id {
        return refuse("it names this deployment itself".into());
    }
    let group = &spec.deployment_group_id;
    let source_dir = root.deployment_dir(group, source_id);
    let source_archive = source_dir.join("deployment-archive");
    match fs::symlink_metadata(&source_archive) {
        Ok(m) if m.is_dir() && fs::symlink_metadata(&source_dir).is_ok_and(|m| m.is_dir()) => {}
        _ => {
            return refuse(format!(
                "deployment {source_id} has no unpacked archive in deployment group {group} ({} is not a directory)",
                source_archive.display()
            ));
        }
    }
    let record: ArchiveRecord = match fs::read(source_dir.join(ARCHIVE_RECORD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(r) => r,
        None => {
            return refuse(format!(
                "deployment {source_id} has no record of how its archive was obtained ({} is missing or unreadable)",
                source_dir.join(ARCHIVE_RECORD_FILE).display()
            ));
        }
    };
    if record.revision != revision_identity(&spec.revision) {
        return refuse(format!(
            "deployment {source_id} was made from another revision ({}, this deployment has {})",
            record.revision,
            revision_identity(&spec.revision)
        ));
    }
    if let (Some(theirs), Some(ours)) = (&record.etag, spec_etag(&spec.revision))
        && theirs.trim_matches('"') != ours
    {
        return refuse(format!(
            "deployment {source_id}'s bundle had ETag {theirs}, this deployment's has {ours}"
        ));
    }
    let dest_dir = root.deployment_dir(group, &spec.deployment_id);
    let dest_archive = dest_dir.join("deployment-archive");
    let result = copy_into(&source_dir, &dest_dir).and_then(|()| tree_digest(&dest_archive));
    let failure = match result {
        Ok((entries, sha256)) if entries == record.entries && sha256 == record.sha256 => None,
        Ok((entries, _)) => Some(format!(
            "deployment {source_id}'s archive changed since it was unpacked ({entries} entries, \
             recorded {}; the digest differs)",
            record.entries
        )),
        Err(e) => Some(format!(
            "copying deployment {source_id}'s archive failed: {e}"
        )),
    };
    if let Some(reason) = failure {
        discard(&dest_dir);
        return refuse(reason);
    }
    // The record travels with the copy, so a chain of restarts keeps reusing.
    let json = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = write_atomic(&dest_dir.join(ARCHIVE_RECORD_FILE), &json) {
        tracing::warn!(error = %e, "cannot record the reused archive's digest");
    }
    write_source(&dest_dir, BundleSource::ArchiveReuse);
    Ok(())
}

/// Removes what a failed attempt copied (archive, bundle, ETag, record).
fn discard(dest_dir: &Path) {
    let archive = dest_dir.join("deployment-archive");
    if fs::symlink_metadata(&archive).is_ok() {
        let _ = fs::remove_dir_all(&archive);
    }
    for name in [
        "bundle.tar",
        crate::revision::BUNDLE_ETAG_FILE,
        ARCHIVE_RECORD_FILE,
    ] {
        let _ = fs::remove_file(dest_dir.join(name));
    }
}

/// Copies the source's archive (modes, owners, symlinks as symlinks), hard-links its
/// `bundle.tar` when it is a regular file, and carries its `.bundle-etag`.
fn copy_into(source_dir: &Path, dest_dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dest_dir)?;
    discard(dest_dir);
    copy_tree(
        &source_dir.join("deployment-archive"),
        &dest_dir.join("deployment-archive"),
    )?;
    let bundle = source_dir.join("bundle.tar");
    if fs::symlink_metadata(&bundle).is_ok_and(|m| m.is_file()) {
        // Not needed by Install; a copy of the bytes for operators, as v2 keeps it.
        let _ = fs::hard_link(&bundle, dest_dir.join("bundle.tar"));
    }
    let etag = source_dir.join(crate::revision::BUNDLE_ETAG_FILE);
    if fs::symlink_metadata(&etag).is_ok_and(|m| m.is_file()) {
        fs::copy(&etag, dest_dir.join(crate::revision::BUNDLE_ETAG_FILE))?;
    }
    Ok(())
}

/// `cp -a` of a tree the agent unpacked: never follows a symlink; owners, then modes (a chown
/// clears set-id bits), directory modes last so read-only directories can be filled.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let root_meta = fs::symlink_metadata(from)?;
    fs::create_dir(to)?;
    let mut dirs = vec![(to.to_path_buf(), root_meta.clone())];
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    let euid_root = nix::unistd::geteuid().is_root();
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in fs::read_dir(&src_dir)? {
            let entry = entry?;
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let meta = fs::symlink_metadata(&src)?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                symlink(fs::read_link(&src)?, &dst)?;
                if euid_root {
                    lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
                }
            } else if ft.is_dir() {
                fs::create_dir(&dst)?;
                dirs.push((dst.clone(), meta));
                stack.push((src, dst));
            } else if ft.is_file() {
                let mut input = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&src)?;
                let mut output = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dst)?;
                io::copy(&mut input, &mut output)?;
                if euid_root {
                    std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
                }
                output.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                output.set_modified(meta.modified()?)?;
            } else {
                return Err(io::Error::other(format!(
                    "{} is not a regular file, directory or symlink",
                    src.display()
                )));
            }
        }
    }
    for (dir, meta) in dirs.iter().rev() {
        if euid_root {
            std::os::unix::fs::chown(dir, Some(meta.uid()), Some(meta.gid()))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_id_shapes() {
        for good in ["d-A1B2C3D4E", "d-0", "d-ABCDEFGHI"] {
            assert!(is_valid_deployment_id(good), "{good}");
        }
        let long = format!("d-{}", "A".repeat(63));
        for bad in [
            "d-../../etc",
            "d-A/B",
            "../d-ABC",
            "d-A.B",
            "d-",
            "",
            "d-abc",
            "not-an-id",
            "d-A B",
            "d-A\0B",
            long.as_str(),
        ] {
            assert!(!is_valid_deployment_id(bad), "{bad:?}");
        }
    }

    fn spec(id: &str, reuse: Option<&str>) -> DeploymentSpec {
        let mut s = DeploymentSpec::from_json(&format!(
            r#"{{"DeploymentId":"{id}","DeploymentGroupId":"g","DeploymentGroupName":"n","ApplicationName":"a","Revision":{{"RevisionType":"S3","S3Revision":{{"Bucket":"b","Key":"k","BundleType":"tar"}}}}}}"#
        ))
        .expect("spec");
        s.reuse_archive_from_deployment_id = reuse.map(str::to_owned);
        s
    }

    fn seed(root: &DeploymentRoot, id: &str) -> std::path::PathBuf {
        let dir = root.deployment_dir("g", id);
        let archive = dir.join("deployment-archive");
        fs::create_dir_all(archive.join("scripts")).expect("mkdir");
        fs::write(archive.join("appspec.yml"), "version: 0.0\nos: linux\n").expect("write");
        fs::write(archive.join("scripts/start.sh"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(
            archive.join("scripts/start.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        symlink("start.sh", archive.join("scripts/link")).expect("symlink");
        fs::write(dir.join("bundle.tar"), "bytes").expect("write");
        record_download(&dir, &spec(id, None).revision, true);
        dir
    }

    #[test]
    fn a_recorded_archive_is_reused_and_a_changed_one_is_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = DeploymentRoot::new(tmp.path(), "codedeploy-agent");
        let source = seed(&root, "d-OLD");
        assert_eq!(recorded_source(&source), Some(BundleSource::Downloaded));
        reuse_archive(&root, &spec("d-NEW", Some("d-OLD"))).expect("reused");
        let dest = root.deployment_dir("g", "d-NEW");
        assert_eq!(recorded_source(&dest), Some(BundleSource::ArchiveReuse));
        assert_eq!(
            tree_digest(&dest.join("deployment-archive")).expect("digest"),
            tree_digest(&source.join("deployment-archive")).expect("digest")
        );
        assert_eq!(
            fs::read_link(dest.join("deployment-archive/scripts/link")).expect("link"),
            Path::new("start.sh")
        );
        // A chain of restarts: the copy carries the record.
        reuse_archive(&root, &spec("d-NEWER", Some("d-NEW"))).expect("reused again");

        fs::write(source.join("deployment-archive/appspec.yml"), "tampered").expect("write");
        let refused = reuse_archive(&root, &spec("d-NEXT", Some("d-OLD"))).expect_err("tampered");
        assert!(
            refused.0.contains("changed since it was unpacked"),
            "{refused}"
        );
        let next = root.deployment_dir("g", "d-NEXT");
        assert!(
            !next.join("deployment-archive").exists(),
            "the copy is discarded"
        );
        assert!(!next.join("bundle.tar").exists());
    }

    #[test]
    fn each_doubt_refuses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = DeploymentRoot::new(tmp.path(), "codedeploy-agent");
        let source = seed(&root, "d-OLD");
        for (s, want) in [
            (spec("d-NEW", Some("d-old")), "is not a deployment id"),
            (spec("d-OLD", Some("d-OLD")), "this deployment itself"),
            (spec("d-NEW", Some("d-GONE")), "has no unpacked archive"),
        ] {
            let refused = reuse_archive(&root, &s).expect_err(want);
            assert!(refused.0.contains(want), "{refused}");
        }
        let mut other = spec("d-NEW", Some("d-OLD"));
        other.deployment_group_id = "other".into();
        assert!(
            reuse_archive(&root, &other)
                .expect_err("other group")
                .0
                .contains("in deployment group other")
        );
        let mut moved = spec("d-NEW", Some("d-OLD"));
        moved.revision = Revision::S3 {
            bucket: "b".into(),
            key: "other-key".into(),
            bundle_type: "tar".into(),
            version: None,
            etag: None,
        };
        assert!(
            reuse_archive(&root, &moved)
                .expect_err("revision")
                .0
                .contains("another revision")
        );
        fs::remove_file(source.join(ARCHIVE_RECORD_FILE)).expect("rm");
        assert!(
            reuse_archive(&root, &spec("d-NEW", Some("d-OLD")))
                .expect_err("record")
                .0
                .contains("no record")
        );
    }
}
