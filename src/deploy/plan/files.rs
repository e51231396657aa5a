//! The `files` section: copy and mkdir instructions, with the AWS agent's collision checks
//! (`installer.rb#generate_instructions`, `CommandBuilder#copy`/`#mkdir`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Instruction;
use super::bundle::{Bundle, EntryKind, Source};
use super::error::{Problem, ProblemKind};
use super::paths::expand;
use crate::appspec::{FileExistsBehavior, FileMapping};

/// A destination the plan copies a bundle entry to.
#[derive(Debug)]
pub(super) struct CopyTarget {
    /// The bundle path copied from, shared with the instruction.
    pub source: Arc<Path>,
    /// `Some(link text)` when the entry is a symlink installed as a symlink.
    pub link_target: Option<PathBuf>,
    /// Index of the `files` entry that produced it.
    pub mapping: usize,
    /// Position among all copies, in instruction order.
    pub order: usize,
}

/// A directory the plan creates.
#[derive(Debug)]
pub(super) struct MkdirTarget {
    pub mapping: usize,
    /// Position among all mkdirs, in instruction order.
    pub order: usize,
}

/// The result of planning the `files` section.
pub(super) struct Files<'a> {
    bundle: &'a Bundle,
    mappings: &'a [FileMapping],
    /// `None`: every file is copied, whatever is on disk (the installer decides later).
    existing: Option<FileExistsBehavior>,
    /// What is on disk (the real file system, or a preview of it after a cleanup).
    pub view: &'a DiskView,
    pub instructions: Vec<Instruction>,
    /// Keyed by normalised absolute destination (shared with the instruction).
    pub copies: HashMap<Arc<Path>, CopyTarget>,
    /// Keyed by normalised absolute directory (shared with the instruction).
    pub mkdirs: HashMap<Arc<Path>, MkdirTarget>,
    pub problems: Vec<Problem>,
}

impl<'a> Files<'a> {
    /// Plans every entry of `mappings`, in order.
    pub(super) fn plan(
        bundle: &'a Bundle,
        mappings: &'a [FileMapping],
        existing: Option<FileExistsBehavior>,
        view: &'a DiskView,
    ) -> Files<'a> {
        let mut files = Files {
            bundle,
            mappings,
            existing,
            view,
            instructions: Vec::new(),
            copies: HashMap::new(),
            mkdirs: HashMap::new(),
            problems: Vec::new(),
        };
        for (index, mapping) in mappings.iter().enumerate() {
            files.add_mapping(index, mapping);
        }
        files
    }

    fn add_mapping(&mut self, mapping: usize, entry: &FileMapping) {
        let destination = expand(Path::new(&entry.destination));
        match self.bundle.resolve(&entry.source) {
            Ok(Source::Directory(rel)) => {
                self.fill_in_missing_ancestors(&destination, mapping);
                self.copy_directory(rel, destination, mapping);
            }
            Ok(Source::File(rel)) => self.copy_single(&rel, &destination, None, mapping),
            Ok(Source::Symlink(rel)) => {
                let link = self.bundle.link_target(&rel);
                self.copy_single(&rel, &destination, Some(link), mapping);
            }
            Err(kind) => self.problem(kind, mapping),
        }
    }

    /// A file (or symlink) source goes to `<destination>/<basename>`.
    fn copy_single(
        &mut self,
        rel: &Path,
        destination: &Path,
        link_target: Option<PathBuf>,
        mapping: usize,
    ) {
        let name = rel.file_name().unwrap_or(rel.as_os_str());
        let target = destination.join(name);
        self.fill_in_missing_ancestors(&target, mapping);
        self.normal_copy(self.bundle.logical(rel), target, link_target, mapping);
    }

    /// Merges the contents of bundle directory `rel` into `destination`, depth first, entries
    /// in byte order. A directory is created unless it already is one on disk; symlinks are
    /// installed as symlinks and never entered.
    fn copy_directory(&mut self, rel: PathBuf, destination: PathBuf, mapping: usize) {
        let mut stack = vec![(rel, destination, EntryKind::Directory)];
        while let Some((rel, destination, kind)) = stack.pop() {
            match kind {
                EntryKind::Directory => {
                    if !self.view.is_dir(&destination) {
                        self.mkdir(destination.clone(), mapping);
                    }
                    match self.bundle.list(&rel) {
                        Ok(entries) => {
                            for (child, kind) in entries.into_iter().rev() {
                                let name = child.file_name().unwrap_or(child.as_os_str());
                                let child_destination = destination.join(name);
                                stack.push((child, child_destination, kind));
                            }
                        }
                        Err(problem) => self.problem(problem, mapping),
                    }
                }
                EntryKind::File => {
                    self.normal_copy(self.bundle.logical(&rel), destination, None, mapping);
                }
                EntryKind::Symlink => {
                    let link = self.bundle.link_target(&rel);
                    let source = self.bundle.logical(&rel);
                    self.normal_copy(source, destination, Some(link), mapping);
                }
                EntryKind::Other(what) => {
                    let path = self.bundle.logical(&rel);
                    self.problem(ProblemKind::UnsupportedEntry { path, what }, mapping);
                }
            }
        }
    }

    /// Creates the missing ancestors of `path` (not `path` itself), outermost first, stopping
    /// at `/` or at the first one that exists on disk.
    fn fill_in_missing_ancestors(&mut self, path: &Path, mapping: usize) {
        let mut missing: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|p| p.parent().is_some() && !self.view.exists(p))
            .collect();
        missing.reverse();
        for directory in missing {
            self.mkdir(directory.to_path_buf(), mapping);
        }
    }

    /// `Installer#generate_normal_copy`: with a file-exists behaviour, a destination that
    /// exists on disk is an error (DISALLOW), copied over (OVERWRITE) or left alone and not
    /// planned at all (RETAIN). "Exists" does not follow a symlink: a dangling link counts.
    fn normal_copy(
        &mut self,
        source: PathBuf,
        destination: PathBuf,
        link_target: Option<PathBuf>,
        mapping: usize,
    ) {
        if let Some(behavior) = self.existing
            && self.view.lexists(&destination)
        {
            match behavior {
                FileExistsBehavior::Disallow => {
                    let kind = ProblemKind::FileExists { destination };
                    return self.problem(kind, mapping);
                }
                FileExistsBehavior::Overwrite => {}
                FileExistsBehavior::Retain => return,
            }
        }
        self.copy(source, destination, link_target, mapping);
    }

    /// `CommandBuilder#copy`.
    fn copy(
        &mut self,
        source: PathBuf,
        destination: PathBuf,
        link_target: Option<PathBuf>,
        mapping: usize,
    ) {
        if let Some(previous) = self.copies.get(destination.as_path()) {
            let kind = ProblemKind::DuplicateDestination {
                src: source,
                previous: previous.source.to_path_buf(),
                destination,
            };
            return self.problem(kind, mapping);
        }
        if self.mkdirs.contains_key(destination.as_path()) {
            let kind = ProblemKind::CopyOntoDirectory {
                src: source,
                destination,
            };
            return self.problem(kind, mapping);
        }
        let source: Arc<Path> = Arc::from(source);
        let destination: Arc<Path> = Arc::from(destination);
        self.instructions.push(Instruction::Copy {
            source: Arc::clone(&source),
            destination: Arc::clone(&destination),
            symlink: link_target.is_some(),
        });
        let order = self.copies.len();
        self.copies.insert(
            destination,
            CopyTarget {
                source,
                link_target,
                mapping,
                order,
            },
        );
    }

    /// `CommandBuilder#mkdir`: a repeated mkdir is merged silently.
    fn mkdir(&mut self, directory: PathBuf, mapping: usize) {
        if let Some(copy) = self.copies.get(directory.as_path()) {
            let kind = ProblemKind::DirectoryOntoCopy {
                directory,
                copied_from: copy.source.to_path_buf(),
            };
            return self.problem(kind, mapping);
        }
        if self.mkdirs.contains_key(directory.as_path()) {
            return;
        }
        let directory: Arc<Path> = Arc::from(directory);
        self.instructions.push(Instruction::Mkdir {
            directory: Arc::clone(&directory),
        });
        let order = self.mkdirs.len();
        self.mkdirs
            .insert(directory, MkdirTarget { mapping, order });
    }

    fn problem(&mut self, kind: ProblemKind, mapping: usize) {
        let position = self.mappings.get(mapping).map(|m| m.position);
        self.problems.push(Problem { kind, position });
    }
}

/// The file system as the plan sees it: the real one, minus paths a preview treats as already
/// removed (the previous install's files, which Install deletes before it plans).
#[derive(Debug, Default, Clone)]
pub struct DiskView {
    absent: std::collections::HashSet<PathBuf>,
}

impl DiskView {
    /// The real file system.
    pub fn real() -> Self {
        Self::default()
    }

    /// The real file system without `absent` (and everything under those paths).
    pub fn without(absent: std::collections::HashSet<PathBuf>) -> Self {
        Self { absent }
    }

    fn gone(&self, path: &Path) -> bool {
        !self.absent.is_empty() && path.ancestors().any(|p| self.absent.contains(p))
    }

    /// Ruby's `File.exist?` (follows symlinks).
    pub fn exists(&self, path: &Path) -> bool {
        !self.gone(path) && fs::metadata(path).is_ok()
    }

    /// Exists without following a final symlink: a dangling link counts.
    pub fn lexists(&self, path: &Path) -> bool {
        !self.gone(path) && fs::symlink_metadata(path).is_ok()
    }

    /// Ruby's `File.directory?`: follows symlinks; errors count as "no".
    pub fn is_dir(&self, path: &Path) -> bool {
        !self.gone(path) && fs::metadata(path).is_ok_and(|m| m.is_dir())
    }
}
