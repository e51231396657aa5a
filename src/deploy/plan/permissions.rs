//! The `permissions` section, matched against the targets the plan creates
//! (agent-behaviour.md §5.5; `installer.rb`, `CommandBuilder#find_matches`,
//! `linux_permission_info.rb`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Instruction;
use super::error::{Problem, ProblemKind};
use super::files::Files;
use super::index::{Index, Target, TargetKind};
use super::paths::{dir_prefix, expand};
use crate::appspec::pattern::Pattern;
use crate::appspec::{ObjectType, Permission};

/// Plans every permission entry, in order. Returns the chmod/setfacl/semanage/chown
/// instructions; problems go to `problems`.
pub(super) fn plan(
    permissions: &[Permission],
    files: &Files<'_>,
    index: &Index<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<Instruction> {
    let mut planner = Planner {
        instructions: Vec::new(),
        already_set: HashSet::new(),
        problems,
    };
    for permission in permissions {
        planner.add(permission, files, index);
    }
    planner.instructions
}

struct Planner<'p> {
    instructions: Vec<Instruction>,
    /// Paths some permission entry already applies to (`@permission_targets`).
    already_set: HashSet<PathBuf>,
    problems: &'p mut Vec<Problem>,
}

impl Planner<'_> {
    fn add(&mut self, permission: &Permission, files: &Files<'_>, index: &Index<'_>) {
        let object = expand(Path::new(&permission.object));

        // Ours: never reach through a symlink this plan installs.
        let through = object.ancestors().skip(1).find_map(|a| {
            let (link, copy) = files.copies.get_key_value(a)?;
            copy.link_target.as_ref().map(|t| (link, t))
        });
        if let Some((link, link_target)) = through {
            let kind = ProblemKind::PermissionThroughSymlink {
                object,
                link: link.clone(),
                link_target: link_target.clone(),
            };
            return self.problem(kind, permission);
        }

        if let Some(copy) = files.copies.get(&object) {
            // The object is a file this deployment copies: only `type: file` applies.
            if !permission.applies_to(ObjectType::File) {
                return;
            }
            if let Some(link_target) = &copy.link_target {
                let link_target = link_target.clone();
                let kind = ProblemKind::PermissionOnSymlink {
                    object,
                    link_target,
                };
                return self.problem(kind, permission);
            }
            if permission.pattern != "**" {
                let kind = ProblemKind::FilePatternNotAnyDepth {
                    object: permission.object.clone(),
                    pattern: permission.pattern.clone(),
                };
                return self.problem(kind, permission);
            }
            if !permission.except.is_empty() {
                let kind = ProblemKind::FileExceptNotEmpty {
                    object: permission.object.clone(),
                    except: permission.except.clone(),
                };
                return self.problem(kind, permission);
            }
            if has_default_acl(permission) {
                return self.problem(ProblemKind::DefaultAclOnFile { file: object }, permission);
            }
            self.set(object, permission);
        } else if files.mkdirs.contains_key(&object) || files.view.is_dir(&object) {
            let matches = find_matches(permission, &object, index);
            if has_default_acl(permission)
                && let Some(file) = matches.iter().find(|t| t.kind == TargetKind::Copy)
            {
                let file = file.path.to_path_buf();
                return self.problem(ProblemKind::DefaultAclOnFile { file }, permission);
            }
            for target in matches {
                self.set(target.path.to_path_buf(), permission);
            }
        }
    }

    /// `CommandBuilder#set_permissions`: chmod, setfacl, semanage, chown, each when given.
    fn set(&mut self, file: PathBuf, permission: &Permission) {
        if self.already_set.contains(&file) {
            let kind = ProblemKind::PermissionSetTwice { path: file };
            return self.problem(kind, permission);
        }
        if let Some(mode) = &permission.mode {
            self.instructions.push(Instruction::Chmod {
                mode: mode.clone(),
                file: file.clone(),
            });
        }
        if !permission.acls.is_empty() {
            self.instructions.push(Instruction::Setfacl {
                acl: permission.acls.clone(),
                file: file.clone(),
            });
        }
        if let Some(context) = &permission.context {
            self.instructions.push(Instruction::Semanage {
                context: context.clone(),
                file: file.clone(),
            });
        }
        if permission.owner.is_some() || permission.group.is_some() {
            self.instructions.push(Instruction::Chown {
                owner: permission.owner.clone(),
                group: permission.group.clone(),
                file: file.clone(),
            });
        }
        self.already_set.insert(file);
    }

    fn problem(&mut self, kind: ProblemKind, permission: &Permission) {
        self.problems.push(Problem {
            kind,
            position: Some(permission.position),
        });
    }
}

fn has_default_acl(permission: &Permission) -> bool {
    permission.acls.iter().any(|a| a.default)
}

/// The targets strictly under directory `object` that `permission` selects, copies first, each
/// kind in instruction order (as `CommandBuilder#find_matches` returns them).
///
/// `pattern: "**"` selects every depth; any other pattern only immediate children whose name
/// matches. `except` globs only ever exclude immediate children. Symlinks the plan installs are
/// never selected: chmod/chown would act on the link's target.
fn find_matches<'i>(
    permission: &Permission,
    object: &Path,
    index: &'i Index<'_>,
) -> Vec<&'i Target<'i>> {
    let any_depth = permission.pattern == "**";
    let pattern = Pattern::new(&permission.pattern);
    let except: Vec<Pattern> = permission.except.iter().map(|e| Pattern::new(e)).collect();
    let wants_files = permission.applies_to(ObjectType::File);
    let wants_directories = permission.applies_to(ObjectType::Directory);
    let prefix_len = dir_prefix(object).len();

    let mut matches: Vec<&Target<'_>> = index
        .under(object)
        .iter()
        .filter(|t| t.link_target.is_none())
        .filter(|t| match t.kind {
            TargetKind::Copy => wants_files,
            TargetKind::Mkdir => wants_directories,
        })
        .filter(|t| {
            let relative = &t.bytes()[prefix_len..];
            let immediate = !relative.contains(&b'/');
            if !any_depth && !immediate {
                return false;
            }
            if !immediate {
                return true;
            }
            let name: Cow<'_, str> = String::from_utf8_lossy(relative);
            (any_depth || pattern.matches(&name)) && !except.iter().any(|e| e.matches(&name))
        })
        .collect();
    matches.sort_unstable_by_key(|t| (t.kind, t.order));
    matches
}
