//! Reading the unpacked bundle (`deployment-archive`): resolving a `files` source inside it and
//! listing directories in sorted order. Nothing here follows a symlink out of the bundle.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::ProblemKind;
use super::paths::expand;

/// The bundle root, both as the agent names it (for instructions and messages) and as the
/// kernel resolves it (for containment checks).
pub(super) struct Bundle {
    /// Absolute and normalised, symlinks kept: what goes into instructions and messages.
    logical: PathBuf,
    /// `canonicalize(logical)`.
    real: PathBuf,
}

/// What a `files` source turned out to be. Paths are relative to the bundle root, free of
/// symlinks except possibly the last component of a [`Source::Symlink`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A directory inside the bundle (the root is the empty path).
    Directory(PathBuf),
    /// A regular file.
    File(PathBuf),
    /// A symlink, installed as a link and never followed.
    Symlink(PathBuf),
}

/// The kind of one directory entry, from `readdir` without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    Directory,
    File,
    Symlink,
    Other(&'static str),
}

impl Bundle {
    pub(super) fn open(archive_dir: &Path) -> Result<Bundle, ProblemKind> {
        let unreadable = |e: io::Error| ProblemKind::BundleUnreadable {
            path: archive_dir.to_path_buf(),
            reason: e.to_string(),
        };
        let logical = expand(&std::path::absolute(archive_dir).map_err(unreadable)?);
        let real = fs::canonicalize(&logical).map_err(unreadable)?;
        if !real.is_dir() {
            return Err(ProblemKind::BundleUnreadable {
                path: logical,
                reason: "not a directory".to_owned(),
            });
        }
        Ok(Bundle { logical, real })
    }

    /// The path the instructions use for `rel`.
    pub(super) fn logical(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.logical.clone()
        } else {
            self.logical.join(rel)
        }
    }

    /// Resolves a `files` source (relative to the bundle; `/`, `.` and trailing slashes allowed).
    ///
    /// Symlinks among the leading components are followed but must stay inside the bundle. A
    /// symlink as the last component is followed only when it leads to a directory inside the
    /// bundle (the appspec named it explicitly, and the AWS agent copies that directory's
    /// contents); a link to a directory outside is an escape; any other link is installed as
    /// a link.
    pub(super) fn resolve(&self, source: &str) -> Result<Source, ProblemKind> {
        let components: Vec<&str> = source
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let escapes = |through: Option<PathBuf>| ProblemKind::SourceEscapes {
            source_text: source.to_owned(),
            through,
        };
        let missing = |looked_for: PathBuf| ProblemKind::SourceMissing {
            source_text: source.to_owned(),
            looked_for,
        };
        let mut rel = PathBuf::new();
        for (i, component) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            if *component == ".." {
                if !rel.pop() {
                    return Err(escapes(None));
                }
                continue;
            }
            let candidate = self.real.join(&rel).join(component);
            let shown = self.logical(&rel.join(component));
            let metadata = match fs::symlink_metadata(&candidate) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Err(missing(shown)),
                Err(e) => return Err(self.unreadable(&shown, &e)),
            };
            if !metadata.file_type().is_symlink() {
                rel.push(component);
                continue;
            }
            let resolved = match fs::canonicalize(&candidate) {
                Ok(resolved) => resolved,
                // A dangling link: fine to install as a link, not to look through.
                Err(_) if last => {
                    rel.push(component);
                    return Ok(Source::Symlink(rel));
                }
                Err(e) if is_missing(&e) => return Err(missing(shown)),
                Err(e) => return Err(self.unreadable(&shown, &e)),
            };
            let inside = resolved
                .strip_prefix(&self.real)
                .ok()
                .map(Path::to_path_buf);
            match (inside, last) {
                (Some(inside), true) if resolved.is_dir() => return Ok(Source::Directory(inside)),
                (Some(inside), false) => rel = inside,
                (None, true) if resolved.is_dir() => return Err(escapes(Some(shown))),
                (None, false) => return Err(escapes(Some(shown))),
                (_, true) => {
                    rel.push(component);
                    return Ok(Source::Symlink(rel));
                }
            }
        }
        let path = self.real.join(&rel);
        let shown = self.logical(&rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Source::Directory(rel)),
            Ok(m) if m.is_file() => Ok(Source::File(rel)),
            Ok(m) => Err(ProblemKind::UnsupportedEntry {
                path: shown,
                what: describe(m.file_type()),
            }),
            Err(e) if is_missing(&e) => Err(missing(shown)),
            Err(e) => Err(self.unreadable(&shown, &e)),
        }
    }

    /// The entries of the bundle directory `rel`, sorted by name (bytes), without `.`/`..`.
    pub(super) fn list(&self, rel: &Path) -> Result<Vec<(PathBuf, EntryKind)>, ProblemKind> {
        let dir = self.real.join(rel);
        let shown = self.logical(rel);
        let mut entries = Vec::new();
        let read = fs::read_dir(&dir).map_err(|e| self.unreadable(&shown, &e))?;
        for entry in read {
            let entry = entry.map_err(|e| self.unreadable(&shown, &e))?;
            // `DirEntry::file_type` does not follow symlinks (d_type, or lstat as a fallback).
            let file_type = entry
                .file_type()
                .map_err(|e| self.unreadable(&shown.join(entry.file_name()), &e))?;
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Directory
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other(describe(file_type))
            };
            entries.push((rel.join(entry.file_name()), kind));
        }
        entries.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        Ok(entries)
    }

    /// Where the symlink `rel` points, as written in the link (for messages).
    pub(super) fn link_target(&self, rel: &Path) -> PathBuf {
        fs::read_link(self.real.join(rel)).unwrap_or_else(|_| PathBuf::from("?"))
    }

    fn unreadable(&self, path: &Path, e: &io::Error) -> ProblemKind {
        ProblemKind::BundleUnreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn describe(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "named pipe"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}
