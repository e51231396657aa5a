//! Getting a revision's bundle onto disk: fetching (`local`, `s3`, `github`, combined by
//! [`Fetcher`]) and safe unpacking (`archive`).

pub mod archive;
pub mod github;
pub mod local;
pub mod s3;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::spec::{DeploymentSpec, Revision};
use github::{GitHubArchive, GitHubFetchError, GitHubFetcher};
use local::LocalFetcher;
use s3::{S3FetchError, S3Fetcher, S3Object, S3Settings};

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
    #[error(transparent)]
    S3(#[from] S3FetchError),
    #[error(transparent)]
    GitHub(#[from] GitHubFetchError),
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

/// Brings a revision into a deployment directory: [`Fetcher`] for every revision type,
/// [`local::LocalFetcher`] for local ones only.
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

/// Fetches every revision type: local ones directly, S3 and GitHub through their clients when
/// configured. Build one per process and, in the daemon, pass [`Fetcher::for_spec`] to the
/// executor so GitHub downloads carry that deployment's access token.
#[derive(Debug, Default)]
pub struct Fetcher {
    s3: Option<S3Fetcher>,
    github: Option<GitHubFetcher>,
}

impl Fetcher {
    pub fn new(s3: Option<S3Fetcher>, github: Option<GitHubFetcher>) -> Self {
        Self { s3, github }
    }

    /// This fetcher with the spec's `GitHubAccessToken` (anonymous without one).
    pub fn for_spec<'a>(&'a self, spec: &'a DeploymentSpec) -> WithToken<'a> {
        WithToken {
            fetcher: self,
            github_token: spec.github_access_token.as_deref(),
        }
    }

    fn fetch_with_token(
        &self,
        revision: &Revision,
        github_token: Option<&str>,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError> {
        match revision {
            Revision::S3 {
                bucket,
                key,
                bundle_type,
                version,
                etag,
            } => {
                let s3 = self.s3.as_ref().ok_or_else(|| {
                    FetchError::Unsupported("no S3 client is configured in this process".into())
                })?;
                let object = S3Object {
                    bucket,
                    key,
                    version: version.as_deref(),
                    etag: etag.as_deref(),
                };
                let downloaded = s3.download(&object, bundle_file)?;
                record_bundle_etag(bundle_file, &downloaded.etag);
                Ok(Fetched::Archive {
                    bundle_type: bundle_type.clone(),
                })
            }
            Revision::GitHub {
                account,
                repository,
                commit_id,
                bundle_type,
            } => {
                let github = self.github.as_ref().ok_or_else(|| {
                    FetchError::Unsupported("no GitHub client is configured in this process".into())
                })?;
                let archive = GitHubArchive {
                    account,
                    repository,
                    commit: commit_id,
                    bundle_type: bundle_type.as_deref(),
                    token: github_token,
                };
                let bundle_type = github.download(&archive, bundle_file)?;
                Ok(Fetched::Archive {
                    bundle_type: bundle_type.into(),
                })
            }
            Revision::LocalFile { .. } | Revision::LocalDirectory { .. } => {
                LocalFetcher.fetch(revision, bundle_file, archive_dir)
            }
        }
    }
}

impl Fetch for Fetcher {
    /// GitHub downloads are anonymous here; see [`Fetcher::for_spec`].
    fn fetch(
        &self,
        revision: &Revision,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError> {
        self.fetch_with_token(revision, None, bundle_file, archive_dir)
    }
}

/// A [`Fetcher`] carrying one deployment's GitHub access token.
#[derive(Debug, Clone, Copy)]
pub struct WithToken<'a> {
    fetcher: &'a Fetcher,
    github_token: Option<&'a str>,
}

impl Fetch for WithToken<'_> {
    fn fetch(
        &self,
        revision: &Revision,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError> {
        self.fetcher
            .fetch_with_token(revision, self.github_token, bundle_file, archive_dir)
    }
}

/// A [`Fetcher`] with its own tokio runtime, for synchronous programs (local mode). Only the
/// client the revision needs is built: S3 from the SDK's default credential and region chains,
/// GitHub anonymous.
#[derive(Debug)]
pub struct StandaloneFetcher {
    fetcher: Fetcher,
    github_token: Option<String>,
    // Declared last so the clients are dropped before the runtime they use.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl StandaloneFetcher {
    pub fn for_revision(config: &Config, revision: &Revision) -> Result<Self, FetchError> {
        if !matches!(revision, Revision::S3 { .. } | Revision::GitHub { .. }) {
            return Ok(Self {
                fetcher: Fetcher::default(),
                github_token: None,
                _runtime: None,
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("codedeploy-fetch")
            .enable_all()
            .build()
            .map_err(|e| FetchError::Other(format!("could not start the I/O runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let fetcher = match revision {
            Revision::GitHub { .. } => {
                let mut github = GitHubFetcher::new(config.proxy_uri.as_deref(), handle)?
                    .with_throughput_floor(config.download_floor);
                if let Some(url) = std::env::var(GITHUB_API_URL_ENV)
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                {
                    tracing::info!("GitHub API root from {GITHUB_API_URL_ENV}: {url}");
                    github = github.with_base_url(url);
                }
                Fetcher::new(None, Some(github))
            }
            _ => {
                let settings = S3Settings::from_config(config, String::new());
                let s3 = runtime
                    .block_on(S3Fetcher::from_environment(settings, handle))?
                    .with_throughput_floor(config.download_floor);
                Fetcher::new(Some(s3), None)
            }
        };
        Ok(Self {
            fetcher,
            github_token: None,
            _runtime: Some(runtime),
        })
    }

    /// GitHub downloads send `token` (`--github-token` / `CODEDEPLOY_GITHUB_TOKEN`).
    pub fn with_github_token(mut self, token: Option<String>) -> Self {
        self.github_token = token;
        self
    }
}

/// Local mode: the GitHub API root instead of `https://api.github.com` (GitHub Enterprise
/// Server's `https://<host>/api/v3`, or a test server).
pub const GITHUB_API_URL_ENV: &str = "CODEDEPLOY_GITHUB_API_URL";

impl Fetch for StandaloneFetcher {
    fn fetch(
        &self,
        revision: &Revision,
        bundle_file: &Path,
        archive_dir: &Path,
    ) -> Result<Fetched, FetchError> {
        self.fetcher.fetch_with_token(
            revision,
            self.github_token.as_deref(),
            bundle_file,
            archive_dir,
        )
    }
}

/// The file, next to `bundle.tar` in the deployment directory, holding the ETag S3 returned
/// for the bundle (unquoted): the hooks' `BUNDLE_ETAG` when the spec names none (as v2 does).
pub const BUNDLE_ETAG_FILE: &str = ".bundle-etag";

/// Writes [`BUNDLE_ETAG_FILE`] beside `bundle_file`; a failure only loses the variable.
fn record_bundle_etag(bundle_file: &Path, etag: &str) {
    let etag = etag.trim_matches('"');
    if etag.is_empty() {
        return;
    }
    let path = bundle_file.with_file_name(BUNDLE_ETAG_FILE);
    let _ = std::fs::remove_file(&path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .and_then(|mut f| io::Write::write_all(&mut f, etag.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), "cannot record the bundle's ETag: {e}");
    }
}

/// The ETag [`record_bundle_etag`] kept in `deployment_dir`, if any.
pub fn recorded_bundle_etag(deployment_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(deployment_dir.join(BUNDLE_ETAG_FILE)).ok()?;
    let etag = text.trim();
    (!etag.is_empty() && etag.len() <= 256 && etag.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| etag.to_owned())
}

/// Replaces whatever is at `dest` (a previous bundle, or the symlink a local revision left)
/// with a new empty file: never writes through a symlink.
pub(crate) fn create_bundle_file(dest: &Path) -> io::Result<File> {
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dest)
}

/// Bounds a large download by throughput instead of a total time: after a grace period the
/// average rate since the start must stay above a floor, so a server trickling a few bytes a
/// second is given up on (and retried) instead of holding the deployment for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputFloor {
    /// Time before the rate is judged.
    pub grace: Duration,
    /// The lowest average rate accepted after the grace period.
    pub min_bytes_per_sec: u64,
    /// The longest wait for any next chunk.
    pub stall: Duration,
}

impl ThroughputFloor {
    /// 1 KiB/s on average after 30 s, and no single wait longer than 60 s.
    pub const DEFAULT: ThroughputFloor = ThroughputFloor {
        grace: Duration::from_secs(30),
        min_bytes_per_sec: 1024,
        stall: Duration::from_secs(60),
    };

    /// `Err` with a description once `bytes` received since `started` are too few.
    pub fn check(&self, started: Instant, bytes: u64) -> Result<(), String> {
        let elapsed = started.elapsed();
        if elapsed < self.grace {
            return Ok(());
        }
        let floor = (self.min_bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
        if bytes < floor {
            return Err(format!(
                "the download is too slow: {bytes} bytes in {:.0} s, below the floor of {} \
                 bytes/s",
                elapsed.as_secs_f64(),
                self.min_bytes_per_sec
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn bundle_file_replaces_a_symlink_without_following_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep me").expect("write");
        let dest = tmp.path().join("bundle.tar");
        std::os::unix::fs::symlink(&victim, &dest).expect("symlink");
        let f = create_bundle_file(&dest).expect("create");
        f.write_all_at(b"new", 0).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
        assert_eq!(std::fs::read(&dest).expect("read"), b"new");
    }

    #[test]
    fn unconfigured_clients_are_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let revision = Revision::S3 {
            bucket: "b".into(),
            key: "k".into(),
            bundle_type: "zip".into(),
            version: None,
            etag: None,
        };
        let err = Fetcher::default()
            .fetch(&revision, &tmp.path().join("bundle.tar"), tmp.path())
            .expect_err("no client");
        assert!(err.to_string().contains("no S3 client"), "{err}");
    }
}
