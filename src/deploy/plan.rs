//! Appspec + unpacked bundle -> install plan: the AWS agent's `CommandBuilder` and
//! `Installer#generate_instructions` (agent-behaviour.md §5.3, §5.5, §5.9, §6.1, §6.2).
//!
//! [`build`] and [`build_for_install`] read the bundle and stat the destination side; they
//! never write. The plan lists the `files` section first (appspec order, each directory walked
//! depth first in byte order of names, where the AWS agent uses `readdir` order), then the
//! `permissions` section. Paths are compared after lexical normalisation (Ruby's
//! `File.expand_path`; a relative path is taken from `/`). [`InstallPlan::to_install_json`]
//! renders the informational `<dg>-install.json`.
//!
//! Beyond the AWS agent (each listed in docs/compatibility.md): a source that is missing or
//! resolves outside the bundle is an error here rather than a failed `cp` later; symlinks in
//! the bundle are installed as symlinks and never entered; nothing is installed through a
//! symlink the plan itself installs, and permissions never act through one.

mod bundle;
mod error;
mod files;
mod index;
mod json;
mod paths;
mod permissions;

use std::path::Path;
use std::sync::Arc;

use crate::appspec::{AclEntry, AppSpec, FileExistsBehavior, Mode, SeContext};

pub use error::{PlanError, Problem, ProblemKind};
pub use files::DiskView;

/// One step of an install, in the order it must run.
///
/// Paths, modes and owner names are shared (`Arc`): a file's destination is stored once and
/// referenced by its copy and by every permission instruction on it, which keeps the plan of a
/// 100,000-file bundle small (benches/notes.md, "Peak RSS").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// Copy a bundle entry. With `symlink`, the entry is a symlink and is installed as a
    /// symlink with the same target.
    Copy {
        source: Arc<Path>,
        destination: Arc<Path>,
        symlink: bool,
    },
    /// Create one directory (its parent exists or is created by an earlier instruction).
    Mkdir {
        directory: Arc<Path>,
    },
    Chmod {
        mode: Arc<Mode>,
        file: Arc<Path>,
    },
    /// `setfacl --set` with these entries (canonical form via `Display`).
    Setfacl {
        acl: Arc<[AclEntry]>,
        file: Arc<Path>,
    },
    /// SELinux file context (`semanage fcontext -a`, then `restorecon`).
    Semanage {
        context: Arc<SeContext>,
        file: Arc<Path>,
    },
    Chown {
        owner: Option<Arc<str>>,
        group: Option<Arc<str>>,
        file: Arc<Path>,
    },
}

/// Everything one `Install` does, in order: copies and mkdirs, then permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallPlan {
    pub instructions: Vec<Instruction>,
}

/// Plans the install of `spec` from the unpacked bundle at `archive_dir`
/// (`<deployment>/deployment-archive`). Every bundle file gets a copy, whatever exists at its
/// destination: the caller handles `file_exists_behavior` (or use [`build_for_install`]).
///
/// Every problem is collected; the error displays the one the AWS agent would have raised
/// first, when it raises one at all.
pub fn build(spec: &AppSpec, archive_dir: &Path) -> Result<InstallPlan, PlanError> {
    plan(spec, archive_dir, None, &DiskView::real())
}

/// [`build`], plus the AWS agent's generation-time `file_exists_behavior` (agent-behaviour.md
/// §5.4): the appspec's value if it has one, else `deployment_behavior`. A destination file
/// that exists on disk fails the plan (`DISALLOW`), is copied over (`OVERWRITE`), or is left
/// out of the plan entirely (`RETAIN`: no copy, and permissions do not select it).
///
/// Call it after the previous install of the deployment group has been cleaned up, as the AWS
/// agent does (§6.1), so only files it did not install count.
pub fn build_for_install(
    spec: &AppSpec,
    archive_dir: &Path,
    deployment_behavior: FileExistsBehavior,
) -> Result<InstallPlan, PlanError> {
    let behavior = spec.file_exists_behavior.unwrap_or(deployment_behavior);
    plan(spec, archive_dir, Some(behavior), &DiskView::real())
}

/// [`build_for_install`] against a view of the disk: `plan` previews an install as if the
/// previous install of the group had already been cleaned up.
pub fn build_with_view(
    spec: &AppSpec,
    archive_dir: &Path,
    deployment_behavior: Option<FileExistsBehavior>,
    view: &DiskView,
) -> Result<InstallPlan, PlanError> {
    let behavior = deployment_behavior.map(|b| spec.file_exists_behavior.unwrap_or(b));
    plan(spec, archive_dir, behavior, view)
}

fn plan(
    spec: &AppSpec,
    archive_dir: &Path,
    existing: Option<FileExistsBehavior>,
    view: &DiskView,
) -> Result<InstallPlan, PlanError> {
    let bundle = match bundle::Bundle::open(archive_dir) {
        Ok(bundle) => bundle,
        Err(kind) => {
            return Err(PlanError::single(Problem {
                kind,
                position: None,
            }));
        }
    };
    let mut files = files::Files::plan(&bundle, &spec.files, existing, view);
    let mut problems = std::mem::take(&mut files.problems);
    // The permission instructions go straight after the files part, in the same vector.
    let mut instructions = std::mem::take(&mut files.instructions);
    let index = index::Index::new(&files);
    check_symlink_traversal(&index, spec, &mut problems);
    permissions::plan(
        &spec.permissions,
        &files,
        &index,
        &mut instructions,
        &mut problems,
    );
    if let Some(error) = PlanError::from_problems(problems) {
        return Err(error);
    }
    // The planning scratch (bundle index, target maps) goes before the plan is used.
    drop(index);
    drop(files);
    drop(bundle);
    instructions.shrink_to_fit();
    Ok(InstallPlan { instructions })
}

/// Ours: a copy or mkdir target inside a symlink this same plan installs would be written
/// wherever the link points. One problem per (files entry, link).
fn check_symlink_traversal(index: &index::Index<'_>, spec: &AppSpec, problems: &mut Vec<Problem>) {
    for link in index.symlinks() {
        let Some(link_target) = link.link_target else {
            continue;
        };
        let mut reported = std::collections::HashSet::new();
        for inside in index.under(link.path) {
            if reported.insert(inside.mapping) {
                problems.push(Problem {
                    kind: ProblemKind::InstallsThroughSymlink {
                        path: inside.path.to_path_buf(),
                        link: link.path.to_path_buf(),
                        link_target: link_target.clone(),
                    },
                    position: spec.files.get(inside.mapping).map(|m| m.position),
                });
            }
        }
    }
}
