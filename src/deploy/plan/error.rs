//! What can go wrong while planning an install: the AWS agent's own messages, word for word
//! (agent-behaviour.md §5.5, §5.9), and ours for the cases it does not catch.

use std::fmt;
use std::path::PathBuf;

use crate::appspec::Position;
use crate::appspec::ruby::inspect_str_array as ruby_inspect_array;

/// One reason the plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    // ---- Raised by the AWS agent's CommandBuilder / Installer, same text. ----
    /// `DISALLOW` and the destination file already exists (agent-behaviour.md §5.4).
    #[error(
        "The deployment failed because a specified file already exists at this location: {}",
        .destination.display()
    )]
    FileExists { destination: PathBuf },
    /// Two bundle files land on the same destination file.
    #[error(
        "The deployment failed because the application specification file specifies two source files named {} and {} for the same destination ({}). Remove one of the source file paths from the AppSpec file, and then try again.",
        .src.display(), .previous.display(), .destination.display()
    )]
    DuplicateDestination {
        src: PathBuf,
        previous: PathBuf,
        destination: PathBuf,
    },
    /// A file would be copied where the plan already creates a directory.
    #[error(
        "The deployment failed because the application specification file calls for installing the file {}, but a file with that name already exists at the location ({}). Update your AppSpec file or directory structure, and then try again.",
        .src.display(), .destination.display()
    )]
    CopyOntoDirectory { src: PathBuf, destination: PathBuf },
    /// A directory would be created where the plan already copies a file.
    #[error(
        "The deployment failed because the application specification file includes an mkdir command more than once for the same destination path ({}) from ({}). Update the files section of the AppSpec file, and then try again.",
        .directory.display(), .copied_from.display()
    )]
    DirectoryOntoCopy {
        directory: PathBuf,
        copied_from: PathBuf,
    },
    /// A permission whose object is a copied file has a pattern other than `**`.
    #[error(
        "The deployment failed because the application specification file includes an object ({object}) with an invalid pattern ({pattern}), such as a pattern for a file applied to a directory. Correct the permissions section of the AppSpec file, and then try again."
    )]
    FilePatternNotAnyDepth { object: String, pattern: String },
    /// A permission whose object is a copied file has `except` globs.
    #[error(
        "The deployment failed because the except parameter for a pattern in the permissions section ({}) for the object named {object} contains an invalid format. Update the AppSpec file, and then try again.",
        ruby_inspect_array(.except)
    )]
    FileExceptNotEmpty { object: String, except: Vec<String> },
    /// A default ACL entry would be applied to a file.
    #[error(
        "The deployment failed because the -d parameter has been specified to apply an acl setting to a file. This parameter is supported for directories only. Update the AppSpec file, and then try again."
    )]
    DefaultAclOnFile { file: PathBuf },
    /// Two permission entries select the same path.
    #[error(
        "The deployment failed because the permissions setting for ({}) is specified more than once in the application specification file. Update the files section of the AppSpec file, and then try again.",
        .path.display()
    )]
    PermissionSetTwice { path: PathBuf },

    // ---- Ours: the AWS agent fails later, or not at all. ----
    /// The deployment archive, or something in it, cannot be read.
    #[error(
        "The deployment failed because {} in the revision could not be read: {reason}. Check that the revision was downloaded and unpacked completely, and then try again.",
        .path.display()
    )]
    BundleUnreadable { path: PathBuf, reason: String },
    /// A `files` source names nothing in the bundle.
    #[error(
        "The deployment failed because the files section of the AppSpec file names a source ({source_text}) that does not exist in the revision ({} not found). Correct the source in the files section of the AppSpec file, and then try again.",
        .looked_for.display()
    )]
    SourceMissing {
        source_text: String,
        looked_for: PathBuf,
    },
    /// A `files` source resolves outside the bundle.
    #[error(
        "The deployment failed because the files section of the AppSpec file names a source ({source_text}) that resolves outside the revision{}. Sources must stay inside the revision. Correct the source in the files section of the AppSpec file, and then try again.",
        .through.as_ref().map(|l| format!(" through the symbolic link {}", l.display())).unwrap_or_default()
    )]
    SourceEscapes {
        source_text: String,
        through: Option<PathBuf>,
    },
    /// The bundle holds something that is neither a file, a directory nor a symlink.
    #[error(
        "The deployment failed because the revision contains {}, which is a {what}. Only regular files, directories and symbolic links can be installed. Remove it from the revision, and then try again.",
        .path.display()
    )]
    UnsupportedEntry { path: PathBuf, what: &'static str },
    /// A copy or mkdir target lies inside a symlink this plan installs.
    #[error(
        "The deployment failed because the AppSpec file installs {} inside {}, which this deployment installs as a symbolic link (to {}). Installing through a link could write outside the destination. Update the files section of the AppSpec file, and then try again.",
        .path.display(), .link.display(), .link_target.display()
    )]
    InstallsThroughSymlink {
        path: PathBuf,
        link: PathBuf,
        link_target: PathBuf,
    },
    /// A permission object lies inside a symlink this plan installs.
    #[error(
        "The deployment failed because the permissions object {} lies inside {}, which this deployment installs as a symbolic link (to {}). The permissions would apply outside the destination. Update the permissions section of the AppSpec file, and then try again.",
        .object.display(), .link.display(), .link_target.display()
    )]
    PermissionThroughSymlink {
        object: PathBuf,
        link: PathBuf,
        link_target: PathBuf,
    },
    /// A permission object is itself a symlink this plan installs.
    #[error(
        "The deployment failed because the permissions object {} is a symbolic link this deployment installs (to {}). The permissions would apply to the link's target instead of the link. Update the permissions section of the AppSpec file, and then try again.",
        .object.display(), .link_target.display()
    )]
    PermissionOnSymlink {
        object: PathBuf,
        link_target: PathBuf,
    },
}

impl ProblemKind {
    /// Whether the AWS agent raises this same message while generating its instructions.
    /// Those come first in a [`PlanError`], so its first message is the one AWS would report.
    pub fn raised_by_aws_agent(&self) -> bool {
        matches!(
            self,
            Self::FileExists { .. }
                | Self::DuplicateDestination { .. }
                | Self::CopyOntoDirectory { .. }
                | Self::DirectoryOntoCopy { .. }
                | Self::FilePatternNotAnyDepth { .. }
                | Self::FileExceptNotEmpty { .. }
                | Self::DefaultAclOnFile { .. }
                | Self::PermissionSetTwice { .. }
        )
    }
}

/// A [`ProblemKind`] and the appspec entry that caused it, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The `files` or `permissions` entry the problem comes from.
    pub position: Option<Position>,
}

impl fmt::Display for Problem {
    /// The message alone, exactly; the position is for callers that prefix `line:column`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// The install plan could not be built. Displays as the first problem's message, which is the
/// message the AWS agent would have failed with when it catches the case at all; every problem
/// found is kept in [`PlanError::problems`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{first}")]
pub struct PlanError {
    /// Boxed to keep `Result<_, PlanError>` small.
    first: Box<Problem>,
    rest: Vec<Problem>,
}

impl PlanError {
    /// Builds the error from problems in the order found; `None` when there are none.
    /// Problems the AWS agent raises are moved first, each group keeping its order.
    pub(super) fn from_problems(problems: Vec<Problem>) -> Option<Self> {
        let (mut ordered, ours): (Vec<_>, Vec<_>) = problems
            .into_iter()
            .partition(|p| p.kind.raised_by_aws_agent());
        ordered.extend(ours);
        let mut it = ordered.into_iter();
        let first = it.next()?;
        Some(PlanError {
            first: Box::new(first),
            rest: it.collect(),
        })
    }

    pub(super) fn single(problem: Problem) -> Self {
        PlanError {
            first: Box::new(problem),
            rest: Vec::new(),
        }
    }

    /// The problem reported by `Display`.
    pub fn first(&self) -> &Problem {
        &self.first
    }

    /// All problems, the first one first.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        std::iter::once(&*self.first).chain(self.rest.iter())
    }

    /// All problems, the first one first.
    pub fn into_problems(self) -> Vec<Problem> {
        let mut all = Vec::with_capacity(1 + self.rest.len());
        all.push(*self.first);
        all.extend(self.rest);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_array_inspect() {
        assert_eq!(ruby_inspect_array(&["glob".to_owned()]), r#"["glob"]"#);
        assert_eq!(
            ruby_inspect_array(&["*.log".to_owned(), "a\"b".to_owned()]),
            r#"["*.log", "a\"b"]"#
        );
        assert_eq!(ruby_inspect_array(&[]), "[]");
        assert_eq!(
            ruby_inspect_array(&["#{x}".to_owned(), "a\\b\n".to_owned(), "\u{1}é".to_owned()]),
            r#"["\#{x}", "a\\b\n", "\u0001é"]"#
        );
    }

    #[test]
    fn aws_problems_come_first() {
        let ours = Problem {
            kind: ProblemKind::SourceMissing {
                source_text: "x".into(),
                looked_for: "/a/x".into(),
            },
            position: None,
        };
        let aws = Problem {
            kind: ProblemKind::PermissionSetTwice {
                path: "/srv/a".into(),
            },
            position: None,
        };
        let err = PlanError::from_problems(vec![ours.clone(), aws.clone()]).expect("two problems");
        assert_eq!(err.to_string(), aws.to_string());
        assert_eq!(err.into_problems(), vec![aws, ours]);
        assert!(PlanError::from_problems(Vec::new()).is_none());
    }
}
