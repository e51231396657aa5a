//! Every copy and mkdir target of the plan, sorted by path bytes, so that "everything strictly
//! under this directory" is one contiguous range found by binary search.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::Files;
use super::paths::dir_prefix;

/// Whether a target is copied or created. Copies sort first: the AWS agent looks for
/// permission matches among copy targets before mkdir targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TargetKind {
    Copy,
    Mkdir,
}

/// One copy or mkdir target.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub path: &'a Arc<Path>,
    pub kind: TargetKind,
    /// Position among the targets of the same kind, in instruction order.
    pub order: usize,
    /// Index of the `files` entry that produced it.
    pub mapping: usize,
    /// For a symlink installed as a symlink: the link's text.
    pub link_target: Option<&'a PathBuf>,
}

impl Target<'_> {
    pub fn bytes(&self) -> &[u8] {
        self.path.as_os_str().as_bytes()
    }
}

pub(super) struct Index<'a> {
    sorted: Vec<Target<'a>>,
}

impl<'a> Index<'a> {
    pub(super) fn new(files: &'a Files<'_>) -> Index<'a> {
        let copies = files.copies.iter().map(|(path, c)| Target {
            path,
            kind: TargetKind::Copy,
            order: c.order,
            mapping: c.mapping,
            link_target: c.link_target.as_ref(),
        });
        let mkdirs = files.mkdirs.iter().map(|(path, m)| Target {
            path,
            kind: TargetKind::Mkdir,
            order: m.order,
            mapping: m.mapping,
            link_target: None,
        });
        let mut sorted: Vec<Target<'a>> = copies.chain(mkdirs).collect();
        sorted.sort_unstable_by(|a, b| a.bytes().cmp(b.bytes()));
        Index { sorted }
    }

    /// Targets strictly under `directory`, in path order. O(log n) to find.
    pub(super) fn under(&self, directory: &Path) -> &[Target<'a>] {
        let prefix = dir_prefix(directory);
        let start = self
            .sorted
            .partition_point(|t| t.bytes() < prefix.as_slice());
        let len = self.sorted[start..].partition_point(|t| t.bytes().starts_with(&prefix));
        &self.sorted[start..start + len]
    }

    /// The symlinks the plan installs.
    pub(super) fn symlinks(&self) -> impl Iterator<Item = &Target<'a>> {
        self.sorted.iter().filter(|t| t.link_target.is_some())
    }
}
