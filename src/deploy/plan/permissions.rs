//! The `permissions` section, matched against the targets the plan creates
//! (agent-behaviour.md §5.5; `installer.rb`, `CommandBuilder#find_matches`,
//! `linux_permission_info.rb`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::Instruction;
use super::error::{Problem, ProblemKind};
use super::files::Files;
use super::index::{Index, Target, TargetKind};
use super::paths::{dir_prefix, expand};
use crate::appspec::pattern::Pattern;
use crate::appspec::{AclEntry, Mode, ObjectType, Permission, SeContext};

/// Plans every permission entry, in order, appending the chmod/setfacl/semanage/chown
/// instructions to `instructions`; problems go to `problems`.
pub(super) fn plan(
    permissions: &[Permission],
    files: &Files<'_>,
    index: &Index<'_>,
    instructions: &mut Vec<Instruction>,
    problems: &mut Vec<Problem>,
) {
    let mut planner = Planner {
        instructions,
        already_set: HashSet::new(),
        problems,
    };
    for permission in permissions {
        planner.add(permission, files, index);
    }
}

struct Planner<'p> {
    instructions: &'p mut Vec<Instruction>,
    /// Paths some permission entry already applies to (`@permission_targets`).
    already_set: HashSet<Arc<Path>>,
    problems: &'p mut Vec<Problem>,
}

/// One permission entry's instructions, shared by every path it applies to.
struct Shared {
    mode: Option<Arc<Mode>>,
    acl: Option<Arc<[AclEntry]>>,
    context: Option<Arc<SeContext>>,
    owner: Option<Arc<str>>,
    group: Option<Arc<str>>,
}

impl Shared {
    fn new(permission: &Permission) -> Shared {
        Shared {
            mode: permission.mode.clone().map(Arc::new),
            acl: (!permission.acls.is_empty()).then(|| Arc::from(permission.acls.as_slice())),
            context: permission.context.clone().map(Arc::new),
            owner: permission.owner.as_deref().map(Arc::from),
            group: permission.group.as_deref().map(Arc::from),
        }
    }

    /// How many instructions each path gets.
    fn per_path(&self) -> usize {
        usize::from(self.mode.is_some())
            + usize::from(self.acl.is_some())
            + usize::from(self.context.is_some())
            + usize::from(self.owner.is_some() || self.group.is_some())
    }
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
                link: link.to_path_buf(),
                link_target: link_target.clone(),
            };
            return self.problem(kind, permission);
        }

        if let Some((key, copy)) = files.copies.get_key_value(object.as_path()) {
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
            let shared = Shared::new(permission);
            self.set(Arc::clone(key), &shared, permission);
        } else if files.mkdirs.contains_key(object.as_path()) || files.view.is_dir(&object) {
            let matches = find_matches(permission, &object, index);
            if has_default_acl(permission)
                && let Some(file) = matches.iter().find(|t| t.kind == TargetKind::Copy)
            {
                let file = file.path.to_path_buf();
                return self.problem(ProblemKind::DefaultAclOnFile { file }, permission);
            }
            let shared = Shared::new(permission);
            self.instructions
                .reserve_exact(matches.len().saturating_mul(shared.per_path()));
            for target in matches {
                self.set(Arc::clone(target.path), &shared, permission);
            }
        }
    }

    /// `CommandBuilder#set_permissions`: chmod, setfacl, semanage, chown, each when given.
    fn set(&mut self, file: Arc<Path>, shared: &Shared, permission: &Permission) {
        if self.already_set.contains(&file) {
            let kind = ProblemKind::PermissionSetTwice {
                path: file.to_path_buf(),
            };
            return self.problem(kind, permission);
        }
        if let Some(mode) = &shared.mode {
            self.instructions.push(Instruction::Chmod {
                mode: Arc::clone(mode),
                file: Arc::clone(&file),
            });
        }
        if let Some(acl) = &shared.acl {
            self.instructions.push(Instruction::Setfacl {
                acl: Arc::clone(acl),
                file: Arc::clone(&file),
            });
        }
        if let Some(context) = &shared.context {
            self.instructions.push(Instruction::Semanage {
                context: Arc::clone(context),
                file: Arc::clone(&file),
            });
        }
        if shared.owner.is_some() || shared.group.is_some() {
            self.instructions.push(Instruction::Chown {
                owner: shared.owner.clone(),
                group: shared.group.clone(),
                file: Arc::clone(&file),
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
