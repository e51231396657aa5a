//! Getting a revision's bundle onto disk: fetching (local file or directory here; S3 and
//! GitHub with the daemon work) and safe unpacking (`archive`).

pub mod archive;
pub mod local;

use std::path::{Path, PathBuf};

use crate::spec::Revision;

/// Why a revision could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

/// What a fetch left in the deployment directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// An archive at `<deployment dir>/bundle.tar` (a file or a symlink to one) to unpack.
    Archive { bundle_type: String },
    /// The bundle was copied straight into `deployment-archive` (a `Local Directory`).
    Directory,
}

/// Brings a revision into a deployment directory. The daemon plugs in S3 and GitHub; local
/// mode and tests use [`local::LocalFetcher`].
pub trait Fetch: Send + Sync {
    /// `bundle_file` is `<deployment dir>/bundle.tar`; `archive_dir` is
    /// `<deployment dir>/deployment-archive` (already removed by the caller).
    fn fetch(
        &self,
        revision: &Revision,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError>;
}
