//! Safe, streaming unpacking of zip, tar and tgz bundles.
//!
//! [`unpack`] extracts a downloaded bundle into `deployment-archive` (agent-behaviour.md §6.5)
//! with fixed-size buffers, refuses every entry that could write outside the target
//! (design.md §4, "Nothing escapes"), refuses bombs before writing, and removes the target on
//! any error. All file-system work goes through directory descriptors (`fsops`); names are
//! validated as raw bytes (`names`); `tarx` and `zipx` read the two formats.

mod fsops;
mod names;
mod tarx;
mod zipx;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::statvfs::fstatvfs;

use fsops::{Extractor, FsError, Meta, Replace};
use names::RelPath;

/// Default cap on the number of entries in one bundle.
pub const DEFAULT_MAX_ENTRIES: u64 = 5_000_000;

/// The log line the Ruby agent writes when it strips a leading directory (§6.5).
const STRIP_MESSAGE: &str = "Stripping leading directory from archive bundle contents.";

/// The bundle formats CodeDeploy knows (`BundleType` in the deployment spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BundleType {
    Tar,
    Tgz,
    Zip,
}

impl BundleType {
    /// The spelling used by the deployment spec: `tar`, `tgz` or `zip`.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleType::Tar => "tar",
            BundleType::Tgz => "tgz",
            BundleType::Zip => "zip",
        }
    }
}

impl fmt::Display for BundleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bundle type other than `tar`, `tgz` or `zip`.
#[derive(Debug, thiserror::Error)]
#[error("unknown bundle type {0:?}: expected tar, tgz or zip")]
pub struct UnknownBundleType(pub String);

impl FromStr for BundleType {
    type Err = UnknownBundleType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tar" => Ok(BundleType::Tar),
            "tgz" => Ok(BundleType::Tgz),
            "zip" => Ok(BundleType::Zip),
            other => Err(UnknownBundleType(other.to_owned())),
        }
    }
}

/// Guesses a bundle's type from its first bytes, never from its name.
///
/// Zip: `PK\x03\x04` or (empty zip) `PK\x05\x06`. Tgz: gzip magic `1f 8b`. Tar: `ustar` at
/// offset 257, or a first 512-byte header whose checksum is valid (old v7 archives).
pub fn detect(path: &Path) -> io::Result<Option<BundleType>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 512];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &head[..len];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Some(BundleType::Zip));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Some(BundleType::Tgz));
    }
    if head.len() == 512 && (&head[257..262] == b"ustar" || tarx::header_checksum_ok(head)) {
        return Ok(Some(BundleType::Tar));
    }
    Ok(None)
}

/// How to unpack.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Refuse every symlink entry (config `reject_symlinks_in_bundle`). Off by default:
    /// symlinks, even ones pointing outside the bundle, are created as symlinks (never
    /// followed while extracting), as the AWS agent does.
    pub reject_symlinks: bool,
    /// Keep setuid, setgid and sticky bits. Off by default: they are cleared.
    pub allow_setuid: bool,
    /// Free bytes to assume on the target file system (tests); `None` asks `statvfs`.
    pub available_bytes: Option<u64>,
    /// Most entries a bundle may hold.
    pub max_entries: u64,
    /// Refuse entries with the setuid or setgid bit (config
    /// `reject_unsafe_permissions_in_bundle`) instead of clearing the bits.
    pub reject_setuid: bool,
    /// The most bytes of file data a bundle may unpack to (config
    /// `archive_max_extraction_size`); `None`: only the free space limits it.
    pub max_total_bytes: Option<u64>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            reject_symlinks: false,
            allow_setuid: false,
            available_bytes: None,
            max_entries: DEFAULT_MAX_ENTRIES,
            reject_setuid: false,
            max_total_bytes: None,
        }
    }
}

/// What an unpack created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Regular files, hard links included.
    pub files: u64,
    /// Directories created, explicit or implied by a path.
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Whether the §6.5 strip rule moved a single top-level directory's contents up.
    pub stripped_top_level: bool,
}

/// An entry name exactly as the archive holds it; shown with non-printable bytes escaped.
#[derive(Clone, PartialEq, Eq)]
pub struct EntryName(Vec<u8>);

impl EntryName {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for EntryName {
    fn from(v: Vec<u8>) -> Self {
        EntryName(v)
    }
}

impl From<&[u8]> for EntryName {
    fn from(v: &[u8]) -> Self {
        EntryName(v.to_vec())
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an entry was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("its name is empty")]
    EmptyName,
    #[error("its name contains a NUL byte")]
    NulInName,
    #[error("its path is absolute; bundle paths must be relative to the bundle root")]
    AbsolutePath,
    #[error("its path has a `..` component; bundle paths must not contain `..`")]
    ParentComponent,
    #[error(
        "its path is longer than {} bytes or has a component longer than {} bytes",
        names::PATH_MAX,
        names::NAME_MAX
    )]
    TooLong,
    #[error("its path is more than {} directories deep", names::MAX_DEPTH)]
    TooDeep,
    #[error("it names the bundle root itself but is not a directory")]
    NamesRoot,
    #[error("it would be written through the symlink {0}")]
    ThroughSymlink(EntryName),
    #[error("{0} is already there and is not a directory")]
    NotADirectory(EntryName),
    #[error("a directory of the same name is already there")]
    ReplacesDirectory,
    #[error("the bundle has another entry with the same name")]
    Duplicate,
    #[error("its directory {0} vanished during extraction")]
    Missing(EntryName),
    #[error("its hard-link target {target} {why}")]
    HardLink {
        target: EntryName,
        why: &'static str,
    },
    #[error("it is a {0}; bundles may only hold files, directories and symlinks")]
    Special(&'static str),
    #[error("it is a symlink and reject_symlinks_in_bundle is set")]
    Symlink,
    #[error(
        "its mode {0:04o} has the setuid or setgid bit and reject_unsafe_permissions_in_bundle is set"
    )]
    Setuid(u32),
    #[error("its symlink target is empty, contains a NUL byte or is longer than 4096 bytes")]
    BadSymlinkTarget,
    #[error("it holds more data than the {declared} bytes its header declares")]
    LargerThanDeclared { declared: u64 },
    #[error("its data ends after {got} of the {declared} bytes its header declares")]
    Truncated { declared: u64, got: u64 },
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Why an unpack failed. The target has been removed (or was never touched).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    #[error(transparent)]
    Cancelled(#[from] crate::deploy::cancel::Cancelled),
    #[error(
        "cannot unpack into {}: it exists and is not an empty directory; remove it first",
        target.display()
    )]
    TargetNotEmpty { target: PathBuf },
    #[error(
        "cannot unpack into {}: it is a symlink, which is never followed; remove it first",
        target.display()
    )]
    TargetIsSymlink { target: PathBuf },
    #[error("cannot prepare the unpack target {}: {source}", target.display())]
    Target {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open bundle {}: {source}", archive.display())]
    Open {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "bundle {} is not a valid {kind} archive or is truncated: {source}; check the uploaded revision and its bundle type",
        archive.display()
    )]
    Corrupt {
        archive: PathBuf,
        kind: BundleType,
        #[source]
        source: io::Error,
    },
    #[error(
        "bundle {}: entry {entry} was refused: {reason}; fix the bundle and deploy again",
        archive.display()
    )]
    Rejected {
        archive: PathBuf,
        entry: EntryName,
        #[source]
        reason: Rejection,
    },
    #[error(
        "bundle {}: cannot read entry {entry}: {source}; the bundle is corrupt or truncated, upload it again",
        archive.display()
    )]
    EntryData {
        archive: PathBuf,
        entry: EntryName,
        #[source]
        source: io::Error,
    },
    /// The file system filled up mid-way (the declared sizes fit, the blocks did not). The
    /// first sentence is the AWS agent's own message for this case.
    #[error(
        "The disk is (or was) full during extraction. Entry {entry} did not fit under {}: {source}; free some space and retry",
        target.display()
    )]
    DiskFull {
        target: PathBuf,
        entry: EntryName,
        #[source]
        source: io::Error,
    },
    #[error("cannot write entry {entry} under {}: {source}", target.display())]
    Write {
        target: PathBuf,
        entry: EntryName,
        #[source]
        source: io::Error,
    },
    #[error(
        "bundle {} needs {needed} bytes{} but only {available} are free on the file system of {}; free some space and retry",
        archive.display(),
        entry.as_ref().map(|e| format!(" by entry {e}")).unwrap_or_default(),
        target.display()
    )]
    NoSpace {
        archive: PathBuf,
        target: PathBuf,
        entry: Option<EntryName>,
        needed: u64,
        available: u64,
    },
    #[error(
        "bundle {} has more than {limit} entries; split the revision or raise the limit",
        archive.display()
    )]
    TooManyEntries { archive: PathBuf, limit: u64 },
    #[error(
        "bundle {} unpacks to more than archive_max_extraction_size ({limit} bytes): at least \
         {needed} bytes; raise archive_max_extraction_size or make the bundle smaller",
        archive.display()
    )]
    TooLarge {
        archive: PathBuf,
        needed: u64,
        limit: u64,
    },
    #[error("cannot strip the leading directory in {}: {source}", target.display())]
    Strip {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpacks `archive` of type `kind` into `target`.
///
/// `target` must be absent or an empty directory; it is created. On any error it is removed,
/// so nothing half-written is left, and nothing is ever written outside it.
pub fn unpack(
    archive: &Path,
    kind: BundleType,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackSummary, UnpackError> {
    unpack_with_progress(archive, kind, target, opts, &mut |_, _| {})
}

/// [`unpack`], calling `progress(files, bytes)` as entries are written (every
/// [`PROGRESS_EVERY`] files or so, and at the end).
pub fn unpack_with_progress(
    archive: &Path,
    kind: BundleType,
    target: &Path,
    opts: &UnpackOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<UnpackSummary, UnpackError> {
    tracing::info!(archive = %archive.display(), target = %target.display(), %kind, "unpacking bundle");
    let root = prepare_target(target)?;
    let result = unpack_into(archive, kind, target, root, opts, progress);
    match &result {
        Ok(summary) => tracing::info!(
            files = summary.files,
            dirs = summary.dirs,
            symlinks = summary.symlinks,
            bytes = summary.bytes,
            "bundle unpacked"
        ),
        Err(e) => {
            tracing::debug!(error = %e, "unpack failed; removing the partial target");
            if let Err(rm) = std::fs::remove_dir_all(target) {
                tracing::warn!(target = %target.display(), error = %rm, "cannot remove the partly unpacked target");
            }
        }
    }
    result
}

/// How many files between two progress calls.
pub const PROGRESS_EVERY: u64 = 256;

fn unpack_into(
    archive: &Path,
    kind: BundleType,
    target: &Path,
    root: OwnedFd,
    opts: &UnpackOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<UnpackSummary, UnpackError> {
    let available = match opts.available_bytes {
        Some(n) => n,
        None => {
            let st = fstatvfs(&root).map_err(|e| UnpackError::Target {
                target: target.to_owned(),
                source: e.into(),
            })?;
            st.blocks_available().saturating_mul(st.fragment_size())
        }
    };
    let mut cx = Cx {
        archive,
        kind,
        target,
        opts,
        fs: Extractor::new(root),
        available,
        used: 0,
        entries: 0,
        summary: UnpackSummary::default(),
        progress,
    };
    match kind {
        BundleType::Zip => zipx::unpack(&mut cx)?,
        BundleType::Tar => tarx::unpack(&mut cx, false)?,
        BundleType::Tgz => tarx::unpack(&mut cx, true)?,
    }
    let Cx {
        fs,
        mut summary,
        progress,
        ..
    } = cx;
    progress(summary.files, summary.bytes);
    summary.dirs = fs.created_dirs;
    fs.finish()
        .map_err(|(path, e)| map_fs(archive, target, &path.to_bytes(), e))?;
    summary.stripped_top_level = strip_top_level(target)?;
    Ok(summary)
}

/// Checks `target` is absent or an empty directory, creates it, and opens it without
/// following a symlink.
fn prepare_target(target: &Path) -> Result<OwnedFd, UnpackError> {
    let err = |source: io::Error| UnpackError::Target {
        target: target.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(target) {
        Ok(md) if md.file_type().is_symlink() => {
            return Err(UnpackError::TargetIsSymlink {
                target: target.to_owned(),
            });
        }
        Ok(md) if md.is_dir() => {
            if std::fs::read_dir(target).map_err(err)?.next().is_some() {
                return Err(UnpackError::TargetNotEmpty {
                    target: target.to_owned(),
                });
            }
        }
        Ok(_) => {
            return Err(UnpackError::TargetNotEmpty {
                target: target.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            std::fs::create_dir(target).map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(target, flags, Mode::empty()).map_err(|e| err(e.into()))
}

/// §6.5: if the target holds exactly one entry, a directory whose listing has a name matching
/// `/appspec/i`, move that directory's contents up one level via `<target>-temp`.
fn strip_top_level(target: &Path) -> Result<bool, UnpackError> {
    let err = |source: io::Error| UnpackError::Strip {
        target: target.to_owned(),
        source,
    };
    let mut listing = std::fs::read_dir(target).map_err(err)?;
    let only = match listing.next() {
        Some(entry) => entry.map_err(err)?,
        None => return Ok(false),
    };
    if listing.next().is_some() || !only.file_type().map_err(err)?.is_dir() {
        return Ok(false);
    }
    let inner = only.path();
    let mut has_appspec = false;
    for entry in std::fs::read_dir(&inner).map_err(err)? {
        let name = entry.map_err(err)?.file_name();
        if name
            .as_bytes()
            .to_ascii_lowercase()
            .windows(7)
            .any(|w| w == b"appspec")
        {
            has_appspec = true;
            break;
        }
    }
    if !has_appspec {
        return Ok(false);
    }
    tracing::info!("{STRIP_MESSAGE}");
    let Some(name) = target.file_name() else {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the target path has no final component",
        )));
    };
    let mut temp_name = name.to_owned();
    temp_name.push("-temp");
    let temp = target.with_file_name(temp_name);
    match std::fs::symlink_metadata(&temp) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(&temp).map_err(err)?,
        Ok(_) => std::fs::remove_file(&temp).map_err(err)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::rename(&inner, &temp).map_err(err)?;
    let moved = std::fs::remove_dir(target).and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(err(e));
    }
    Ok(true)
}

/// What a format reader hands over for one entry.
enum Item<'r> {
    Dir,
    File {
        data: &'r mut dyn Read,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// Hard link; the raw target name, relative to the bundle root.
    HardLink(Vec<u8>),
}

/// State shared by the format readers during one unpack.
struct Cx<'a> {
    archive: &'a Path,
    kind: BundleType,
    target: &'a Path,
    opts: &'a UnpackOptions,
    fs: Extractor,
    available: u64,
    used: u64,
    entries: u64,
    summary: UnpackSummary,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Cx<'_> {
    fn corrupt(&self, source: io::Error) -> UnpackError {
        UnpackError::Corrupt {
            archive: self.archive.to_owned(),
            kind: self.kind,
            source,
        }
    }

    fn reject(&self, entry: &[u8], reason: Rejection) -> UnpackError {
        UnpackError::Rejected {
            archive: self.archive.to_owned(),
            entry: entry.into(),
            reason,
        }
    }

    fn entry_data(&self, entry: &[u8], source: io::Error) -> UnpackError {
        UnpackError::EntryData {
            archive: self.archive.to_owned(),
            entry: entry.into(),
            source,
        }
    }

    /// Counts one archive record against the entry cap.
    fn count_entry(&mut self) -> Result<(), UnpackError> {
        crate::test_pause::test_pause_point("unpack-entry");
        crate::deploy::cancel::check()?;
        self.entries += 1;
        if self.entries > self.opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                archive: self.archive.to_owned(),
                limit: self.opts.max_entries,
            });
        }
        Ok(())
    }

    /// Refuses a declared total larger than the free space, before anything is written.
    fn check_total(&self, needed: u64) -> Result<(), UnpackError> {
        self.check_cap(needed)?;
        if needed > self.available {
            return Err(UnpackError::NoSpace {
                archive: self.archive.to_owned(),
                target: self.target.to_owned(),
                entry: None,
                needed,
                available: self.available,
            });
        }
        Ok(())
    }

    /// Refuses more file data than `archive_max_extraction_size`.
    fn check_cap(&self, needed: u64) -> Result<(), UnpackError> {
        match self.opts.max_total_bytes {
            Some(limit) if needed > limit => Err(UnpackError::TooLarge {
                archive: self.archive.to_owned(),
                needed,
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Cleans a mode: permission bits only, special bits dropped unless allowed (or kept so
    /// that [`Cx::add`] can refuse them under `reject_setuid`).
    fn mode(&self, mode: u32) -> u32 {
        if self.opts.allow_setuid {
            mode & 0o7777
        } else if self.opts.reject_setuid {
            mode & 0o6777
        } else {
            mode & 0o777
        }
    }

    /// Extracts one entry. `raw` is its name as stored; `path` its validated form (separators
    /// already decided by the reader).
    fn add(
        &mut self,
        raw: &[u8],
        path: RelPath,
        item: Item<'_>,
        mut meta: Meta,
        replace: Replace,
    ) -> Result<(), UnpackError> {
        if path.is_root() && !matches!(item, Item::Dir) {
            return Err(self.reject(raw, Rejection::NamesRoot));
        }
        if self.opts.reject_setuid && meta.mode & 0o6000 != 0 {
            if matches!(item, Item::Dir) {
                // A setgid directory only passes its group on: cleared, as by default.
                meta.mode &= 0o777;
            } else {
                return Err(self.reject(raw, Rejection::Setuid(meta.mode & 0o7777)));
            }
        }
        let result = match item {
            Item::Dir => {
                tracing::trace!(entry = %raw.escape_ascii(), "directory");
                self.fs.dir(&path, meta)
            }
            Item::File { data, size } => {
                let needed = self.used.saturating_add(size);
                self.check_cap(needed)?;
                if needed > self.available {
                    return Err(UnpackError::NoSpace {
                        archive: self.archive.to_owned(),
                        target: self.target.to_owned(),
                        entry: Some(raw.into()),
                        needed,
                        available: self.available,
                    });
                }
                self.used = needed;
                tracing::trace!(entry = %raw.escape_ascii(), size, "file");
                self.fs.file(&path, meta, data, size, replace).map(|n| {
                    self.summary.files += 1;
                    self.summary.bytes += n;
                    if self.summary.files.is_multiple_of(PROGRESS_EVERY) {
                        (self.progress)(self.summary.files, self.summary.bytes);
                    }
                })
            }
            Item::Symlink(link) => {
                if self.opts.reject_symlinks {
                    return Err(self.reject(raw, Rejection::Symlink));
                }
                if link.is_empty() || link.contains(&0) || link.len() > names::PATH_MAX {
                    return Err(self.reject(raw, Rejection::BadSymlinkTarget));
                }
                tracing::trace!(entry = %raw.escape_ascii(), target = %link.escape_ascii(), "symlink");
                self.fs
                    .symlink(&path, &link, meta, replace)
                    .map(|()| self.summary.symlinks += 1)
            }
            Item::HardLink(link) => {
                let to = match names::normalize(&link, false) {
                    Ok(to) => to,
                    Err(_) => {
                        return Err(self.reject(
                            raw,
                            Rejection::HardLink {
                                target: link.into(),
                                why: "is not a path inside the bundle",
                            },
                        ));
                    }
                };
                tracing::trace!(entry = %raw.escape_ascii(), target = %link.escape_ascii(), "hard link");
                self.fs
                    .hardlink(&path, &to, replace)
                    .map(|()| self.summary.files += 1)
            }
        };
        result.map_err(|e| map_fs(self.archive, self.target, raw, e))
    }
}

fn map_fs(archive: &Path, target: &Path, raw: &[u8], e: FsError) -> UnpackError {
    match e {
        FsError::Reject(reason) => UnpackError::Rejected {
            archive: archive.to_owned(),
            entry: raw.into(),
            reason,
        },
        FsError::Read(source) => UnpackError::EntryData {
            archive: archive.to_owned(),
            entry: raw.into(),
            source,
        },
        FsError::Io(source)
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
        {
            UnpackError::DiskFull {
                target: target.to_owned(),
                entry: raw.into(),
                source,
            }
        }
        FsError::Io(source) => UnpackError::Write {
            target: target.to_owned(),
            entry: raw.into(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_type_round_trips() {
        for t in [BundleType::Tar, BundleType::Tgz, BundleType::Zip] {
            assert_eq!(t.as_str().parse::<BundleType>().unwrap(), t);
        }
        assert!("rar".parse::<BundleType>().is_err());
        assert!("TAR".parse::<BundleType>().is_err());
    }

    #[test]
    fn entry_names_display_escaped() {
        let n = EntryName::from(&b"a\xffb\"c"[..]);
        assert_eq!(n.to_string(), r#""a\xffb\"c""#);
    }
}
