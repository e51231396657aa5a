//! GitHub revisions (agent-behaviour.md §3.4): the tarball or zipball of a commit from the
//! GitHub API, streamed into `bundle.tar`, with the AWS agent's retry schedule and messages.
//!
//! Retries: a failed attempt is retried after 10, 30 and 90 s (three retries, four attempts),
//! then the download fails with every status seen. The AWS agent retries only HTTP error
//! statuses; this one also retries connection failures, recorded as `error '<message>'`.
//! Like [`super::s3::S3Fetcher`], [`GitHubFetcher::download`] blocks on a tokio handle, so call
//! it from a blocking thread.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use tokio::runtime::Handle;

/// The public GitHub API.
pub const GITHUB_API: &str = "https://api.github.com";

/// The AWS agent's sleeps before each retry: 10 s, 30 s, 90 s (`10 * 3^n`).
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(90),
];

/// Why a GitHub bundle could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum GitHubFetchError {
    /// The unbalanced bracket is the AWS agent's.
    #[error("GitHub revision specified with bundle_type other than zip or tar [bundle_type={0}")]
    BundleType(String),
    #[error(
        "Could not download bundle at '{url}' after {retries} retries. Server returned codes: {codes}."
    )]
    RetriesExhausted {
        url: String,
        retries: usize,
        codes: String,
    },
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the GitHub client could not be set up: {0}")]
    Setup(String),
}

/// One GitHub revision to fetch.
#[derive(Clone, Copy)]
pub struct GitHubArchive<'a> {
    pub account: &'a str,
    pub repository: &'a str,
    pub commit: &'a str,
    /// `tar` (the default) or `zip`.
    pub bundle_type: Option<&'a str>,
    /// `GitHubAccessToken`; `None` downloads anonymously.
    pub token: Option<&'a str>,
}

impl std::fmt::Debug for GitHubArchive<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubArchive")
            .field("account", &self.account)
            .field("repository", &self.repository)
            .field("commit", &self.commit)
            .field("bundle_type", &self.bundle_type)
            .field("token", &self.token.map(|_| "REDACTED"))
            .finish()
    }
}

/// Downloads GitHub archives with one shared HTTP client.
#[derive(Debug, Clone)]
pub struct GitHubFetcher {
    client: Arc<OnceLock<reqwest::Client>>,
    proxy: Option<String>,
    handle: Handle,
    base_url: String,
    retry_delays: Vec<Duration>,
    /// How slow a download may be before the attempt is given up (and retried).
    throughput: super::ThroughputFloor,
}

/// How one attempt failed.
enum Attempt {
    /// Worth retrying: an HTTP error status (`500 'Internal Server Error'`) or a network error.
    Retry(String),
    /// Writing the file failed: retrying will not help.
    Fatal(GitHubFetchError),
}

impl GitHubFetcher {
    /// A fetcher for api.github.com, through `proxy` (`proxy_uri`) when given. The HTTP
    /// client (and the trust store it needs) is built at the first download: a host that
    /// never deploys from GitHub never builds it.
    pub fn new(proxy: Option<&str>, handle: Handle) -> Result<Self, GitHubFetchError> {
        if let Some(proxy) = proxy {
            reqwest::Proxy::all(proxy).map_err(|e| {
                GitHubFetchError::Setup(format!("proxy_uri {proxy} is not usable: {e}"))
            })?;
        }
        Ok(Self {
            client: Arc::new(OnceLock::new()),
            proxy: proxy.map(str::to_owned),
            handle,
            base_url: GITHUB_API.into(),
            retry_delays: RETRY_DELAYS.to_vec(),
            throughput: super::ThroughputFloor::DEFAULT,
        })
    }

    fn client(&self) -> Result<&reqwest::Client, GitHubFetchError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        // reqwest is built without a default crypto provider; ring is the binary's one. A
        // second install attempt (another client in this process) fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(format!("codedeploy-agent/{}", crate::VERSION))
            .redirect(reqwest::redirect::Policy::limited(10))
            .connect_timeout(Duration::from_secs(30));
        if let Some(proxy) = &self.proxy {
            let proxy = reqwest::Proxy::all(proxy).map_err(|e| {
                GitHubFetchError::Setup(format!("proxy_uri {proxy} is not usable: {e}"))
            })?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| GitHubFetchError::Setup(crate::control::identity::tls_client_error(&e)))?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Points the fetcher at another API root (tests use a local server).
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Replaces the throughput floor (tests use a short grace period).
    pub fn with_throughput_floor(mut self, floor: super::ThroughputFloor) -> Self {
        self.throughput = floor;
        self
    }

    /// Replaces the retry schedule (tests use milliseconds); its length is the retry count.
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }

    /// The archive URL and the bundle type it yields.
    pub fn url(&self, archive: &GitHubArchive) -> Result<(String, &'static str), GitHubFetchError> {
        let (format, bundle_type) = match archive.bundle_type.unwrap_or("tar") {
            "tar" => ("tarball", "tar"),
            "zip" => ("zipball", "zip"),
            other => return Err(GitHubFetchError::BundleType(other.to_owned())),
        };
        let url = format!(
            "{}/repos/{}/{}/{format}/{}",
            self.base_url, archive.account, archive.repository, archive.commit
        );
        Ok((url, bundle_type))
    }

    /// Downloads the archive to `dest` (replacing a file or symlink there) and returns its
    /// bundle type, `tar` or `zip`. Blocks the calling thread, retries included.
    pub fn download(
        &self,
        archive: &GitHubArchive,
        dest: &Path,
    ) -> Result<&'static str, GitHubFetchError> {
        let (url, bundle_type) = self.url(archive)?;
        if archive.token.is_some() {
            tracing::debug!("Authenticated GitHub repository download requested.");
        } else {
            tracing::debug!("Anonymous GitHub repository download requested.");
        }
        let mut codes = Vec::new();
        for attempt in 0..=self.retry_delays.len() {
            tracing::info!("Requesting URL: '{url}'");
            match self
                .handle
                .block_on(self.attempt(&url, archive.token, dest))
            {
                Ok(bytes) => {
                    tracing::info!(bytes, "Download complete from '{url}'");
                    return Ok(bundle_type);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(code)) => {
                    tracing::error!(
                        "Could not download bundle at '{url}'. Server returned code {code}"
                    );
                    codes.push(code);
                }
            }
            if let Some(delay) = self.retry_delays.get(attempt) {
                tracing::info!(
                    "Retrying download in {} seconds.",
                    delay.as_secs_f64().round()
                );
                std::thread::sleep(*delay);
            }
        }
        Err(GitHubFetchError::RetriesExhausted {
            url,
            retries: self.retry_delays.len(),
            codes: codes.join("; "),
        })
    }

    async fn attempt(&self, url: &str, token: Option<&str>, dest: &Path) -> Result<u64, Attempt> {
        let mut request = self.client().map_err(Attempt::Fatal)?.get(url);
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("token {token}")).map_err(|_| {
                Attempt::Fatal(GitHubFetchError::Setup(
                    "the GitHub access token contains characters not allowed in a header".into(),
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let transport = |e: reqwest::Error| {
            Attempt::Retry(format!(
                "error '{}'",
                super::s3::error_chain(&e.without_url())
            ))
        };
        // The answer's head as a whole within the stall bound; the body is then held to the
        // throughput floor.
        let mut response = tokio::time::timeout(self.throughput.stall, request.send())
            .await
            .map_err(|_| {
                Attempt::Retry(format!(
                    "error 'no answer within {} s'",
                    self.throughput.stall.as_secs()
                ))
            })?
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Attempt::Retry(format!(
                "{} '{}'",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            )));
        }
        let io = |what| {
            move |source| {
                Attempt::Fatal(GitHubFetchError::Io {
                    what,
                    path: dest.to_path_buf(),
                    source,
                })
            }
        };
        let mut file = super::create_bundle_file(dest).map_err(io("create"))?;
        let mut bytes = 0u64;
        let floor = self.throughput;
        let started = std::time::Instant::now();
        loop {
            let chunk = match tokio::time::timeout(floor.stall, response.chunk()).await {
                Ok(chunk) => chunk.map_err(transport)?,
                Err(_) => {
                    return Err(Attempt::Retry(format!(
                        "error 'no data for {} s'",
                        floor.stall.as_secs()
                    )));
                }
            };
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk).map_err(io("write"))?;
            bytes += chunk.len() as u64;
            floor
                .check(started, bytes)
                .map_err(|e| Attempt::Retry(format!("error '{e}'")))?;
        }
        file.sync_all().map_err(io("write"))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(bundle_type: Option<&str>) -> GitHubArchive<'_> {
        GitHubArchive {
            account: "acme",
            repository: "app",
            commit: "abc123",
            bundle_type,
            token: Some("ghp_secret"),
        }
    }

    #[test]
    fn urls_and_bundle_types() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let f = GitHubFetcher::new(None, rt.handle().clone()).expect("client");
        assert_eq!(
            f.url(&archive(None)).expect("tar"),
            (
                "https://api.github.com/repos/acme/app/tarball/abc123".into(),
                "tar"
            )
        );
        assert_eq!(
            f.url(&archive(Some("zip"))).expect("zip").0,
            "https://api.github.com/repos/acme/app/zipball/abc123"
        );
        assert_eq!(
            f.url(&archive(Some("tgz"))).expect_err("tgz").to_string(),
            "GitHub revision specified with bundle_type other than zip or tar [bundle_type=tgz"
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", archive(None));
        assert!(
            !text.contains("ghp_secret") && text.contains("REDACTED"),
            "{text}"
        );
    }
}
