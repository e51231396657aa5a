//! Who this host is and what it signs with (agent-behaviour.md §1.3 to §1.5, §8.2): the
//! instance metadata service (IMDS) client, the resolution of region, host identifier and
//! endpoint domain, the on-premises endpoint checks, and the credentials provider.
//!
//! Nothing here changes the process environment. Where the AWS agent writes the on-premises
//! settings into `ENV` and then reads them back, [`resolve`] takes them from the typed
//! [`OnPremConfig`] with the same precedence.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider, future};
use serde::Deserialize;

use crate::config::Config;
use crate::control::onprem::{self, OnPremConfig, OnPremError};

/// Where IMDS lives unless told otherwise.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The environment variable the AWS SDKs read for another IMDS endpoint.
pub const IMDS_ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// Lifetime asked for IMDSv2 tokens (`X-aws-ec2-metadata-token-ttl-seconds`).
pub const IMDS_TOKEN_TTL_SECONDS: u32 = 21600;
/// Connect and read timeout of each IMDS request.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(10);
/// Sleeps between the three attempts of each IMDS request: 1 s, then 2 s.
pub const IMDS_RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

const TOKEN_PATH: &str = "/latest/api/token";
const METADATA_PATH: &str = "/latest/meta-data";
const PARTITION_PATH: &str = "/latest/meta-data/services/partition";
const DOMAIN_PATH: &str = "/latest/meta-data/services/domain";
const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";

/// What went wrong asking IMDS.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// IMDS answered with a status other than 2xx (`message` is the reason phrase).
    #[error("HTTP error from metadata service: {message}, code {code}")]
    Status {
        path: String,
        code: u16,
        message: String,
    },
    /// No IMDSv2 token, and `disable_imds_v1` forbids going on without one.
    #[error("HTTP error from metadata service to get imdsv2 token.")]
    TokenUnavailable {
        #[source]
        source: Box<ImdsError>,
    },
    /// No answer at all: connect failure, reset, timeout.
    #[error("metadata service request {method} {url} failed: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The instance identity document is not the JSON it should be.
    #[error("the instance identity document from the metadata service is invalid: {source}")]
    Document {
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built (TLS backend initialisation). Built at the first
    /// request, so a configuration that never asks IMDS (on-premises) never meets this.
    #[error(
        "could not build the metadata service HTTP client: {}",
        tls_client_error(source)
    )]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

/// The parts of `/latest/dynamic/instance-identity/document` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub instance_id: String,
}

/// What building a reqwest client failed on, with its whole chain of causes (reqwest's own
/// text is only "builder error"). When the cause is an empty trust store (a minimal root
/// without the `ca-certificates` package), says where certificates were looked for and what
/// to install.
pub fn tls_client_error(e: &reqwest::Error) -> String {
    let chain = crate::revision::s3::error_chain(e);
    if !chain.contains("No CA certificates were loaded") {
        return chain;
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let looked = match (var("SSL_CERT_FILE"), var("SSL_CERT_DIR")) {
        (None, None) => "the system trust store (/etc/ssl/certs/ca-certificates.crt, \
                         /etc/pki/tls/certs/ca-bundle.crt and the other usual places)"
            .to_owned(),
        (file, dir) => [
            file.map(|f| format!("SSL_CERT_FILE={f}")),
            dir.map(|d| format!("SSL_CERT_DIR={d}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", "),
    };
    format!(
        "no CA certificates found in {looked}: install the ca-certificates package \
         (apt-get install ca-certificates, or dnf/yum install ca-certificates) or point \
         SSL_CERT_FILE at a PEM bundle ({chain})"
    )
}

/// A reqwest builder that needs no trust store when `plain_http` (every URL it will be given
/// is `http://`): its TLS configuration then has no roots instead of the system's, so a
/// machine without CA certificates can still build it.
pub fn http_only(builder: reqwest::ClientBuilder, plain_http: bool) -> reqwest::ClientBuilder {
    if plain_http {
        builder.tls_certs_only(Vec::<reqwest::Certificate>::new())
    } else {
        builder
    }
}

/// Installs ring as the process-wide rustls provider (reqwest is built with
/// `rustls-no-provider`). Safe to call any number of times.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The AWS SDK HTTP client in the lean configuration (hyper + rustls with ring).
pub fn sdk_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Builds an [`Imds`].
#[derive(Debug, Clone)]
pub struct ImdsBuilder {
    endpoint: Option<String>,
    disable_v1: bool,
    timeout: Duration,
    retry_delays: [Duration; 2],
}

impl Default for ImdsBuilder {
    fn default() -> Self {
        Self {
            endpoint: None,
            disable_v1: false,
            timeout: IMDS_TIMEOUT,
            retry_delays: IMDS_RETRY_DELAYS,
        }
    }
}

impl ImdsBuilder {
    /// Base URL such as `http://127.0.0.1:8080`. Without it: env
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else [`DEFAULT_IMDS_ENDPOINT`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// `:disable_imds_v1:`: fail instead of falling back to tokenless requests.
    pub fn disable_v1(mut self, disable: bool) -> Self {
        self.disable_v1 = disable;
        self
    }

    /// Connect and read timeout of each request (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The sleeps after the first and the second failed attempt (default 1 s and 2 s).
    pub fn retry_delays(mut self, delays: [Duration; 2]) -> Self {
        self.retry_delays = delays;
        self
    }

    /// The client; its HTTP client is built at the first request (an on-premises host never
    /// asks IMDS, so it never builds one).
    pub fn build(self) -> Result<Imds, ImdsError> {
        let endpoint = self
            .endpoint
            .or_else(|| std::env::var(IMDS_ENDPOINT_ENV).ok())
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned());
        Ok(Imds {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http: Arc::new(OnceLock::new()),
            timeout: self.timeout,
            disable_v1: self.disable_v1,
            retry_delays: self.retry_delays,
            token: Arc::new(Mutex::new(None)),
        })
    }
}

/// An IMDS client with the AWS agent's behaviour (§1.5): IMDSv2 token cached until a 401,
/// IMDSv1 fallback unless disabled, three attempts per request with 1 s and 2 s sleeps, never
/// through a proxy. Cheap to clone; clones share the token cache.
#[derive(Clone)]
pub struct Imds {
    endpoint: String,
    http: Arc<OnceLock<reqwest::Client>>,
    timeout: Duration,
    disable_v1: bool,
    retry_delays: [Duration; 2],
    token: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Imds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Imds")
            .field("endpoint", &self.endpoint)
            .field("disable_v1", &self.disable_v1)
            .field("retry_delays", &self.retry_delays)
            .finish_non_exhaustive()
    }
}

/// One HTTP exchange's outcome before retries are decided.
enum Attempt {
    Body(String),
    Unauthorized(ImdsError),
    Failed(ImdsError),
}

impl Imds {
    pub fn builder() -> ImdsBuilder {
        ImdsBuilder::default()
    }

    /// The client the AWS agent would use for `config`: default endpoint (or the env override)
    /// and `disable_imds_v1`.
    pub fn from_config(config: &Config) -> Result<Self, ImdsError> {
        Self::builder().disable_v1(config.disable_imds_v1).build()
    }

    /// The base URL in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region from the identity document; `None` on any error.
    pub async fn region(&self) -> Option<String> {
        self.logged("region", self.document().await)
            .map(|d| d.region.trim().to_owned())
    }

    /// `services/partition` (`aws`, `aws-cn`, ...); `None` on any error.
    pub async fn partition(&self) -> Option<String> {
        self.logged("partition", self.get_metadata(PARTITION_PATH).await)
            .map(|p| p.trim().to_owned())
    }

    /// `services/domain` (`amazonaws.com`, ...); `None` on any error.
    pub async fn domain(&self) -> Option<String> {
        self.logged("domain", self.get_metadata(DOMAIN_PATH).await)
            .map(|d| d.trim().to_owned())
    }

    /// `instance-id`; `None` on any error.
    pub async fn instance_id(&self) -> Option<String> {
        self.logged("instance-id", self.get_metadata(INSTANCE_ID_PATH).await)
            .map(|i| i.trim().to_owned())
    }

    /// `arn:<partition>:ec2:<region>:<accountId>:instance/<instanceId>`. Errors propagate.
    pub async fn host_identifier(&self) -> Result<String, ImdsError> {
        let partition = self.get_metadata(PARTITION_PATH).await?;
        let doc = self.document().await?;
        Ok(format!(
            "arn:{}:ec2:{}:{}:instance/{}",
            partition.trim(),
            doc.region.trim(),
            doc.account_id.trim(),
            doc.instance_id.trim()
        ))
    }

    /// The instance identity document (body stripped before parsing).
    pub async fn document(&self) -> Result<IdentityDocument, ImdsError> {
        let body = self.get_metadata(DOCUMENT_PATH).await?;
        serde_json::from_str(body.trim()).map_err(|source| ImdsError::Document { source })
    }

    /// True when IMDS answers `GET /latest/meta-data` with 2xx, with a token or without one.
    pub async fn is_supported(&self) -> bool {
        let with_token = match self.token().await {
            Ok(token) => match self.get_with_retries(METADATA_PATH, Some(&token)).await {
                Ok(_) => return true,
                Err(e) => e,
            },
            Err(e) => e,
        };
        tracing::debug!(error = %with_token, "IMDSv2 probe failed; trying IMDSv1");
        self.get_with_retries(METADATA_PATH, None).await.is_ok()
    }

    /// GET `path` the AWS agent's way: with a token when one can be had, else without one
    /// unless IMDSv1 is disabled. A 401 to a request that carried a token clears the cached
    /// token and the whole read is tried once more.
    pub async fn get_metadata(&self, path: &str) -> Result<String, ImdsError> {
        match self.get_once(path).await {
            (Err(ImdsError::Status { code: 401, .. }), true) => {
                tracing::info!(path, "IMDS rejected the cached token; fetching a new one");
                self.clear_token();
                self.get_once(path).await.0
            }
            (result, _) => result,
        }
    }

    /// One read: token (cached or new) then GET, or the IMDSv1 fallback. Also says whether a
    /// token was sent.
    async fn get_once(&self, path: &str) -> (Result<String, ImdsError>, bool) {
        match self.token().await {
            Ok(token) => (self.get_with_retries(path, Some(&token)).await, true),
            Err(source) if self.disable_v1 => (
                Err(ImdsError::TokenUnavailable {
                    source: Box::new(source),
                }),
                false,
            ),
            Err(source) => {
                tracing::warn!(error = %source, "IMDSv2 http request failed, falling back to IMDSv1.");
                (self.get_with_retries(path, None).await, false)
            }
        }
    }

    fn logged<T>(&self, what: &'static str, result: Result<T, ImdsError>) -> Option<T> {
        result
            .map_err(|e| tracing::debug!(what, error = %e, "could not read instance metadata"))
            .ok()
    }

    fn clear_token(&self) {
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
    }

    /// The cached token, or a new one. A failed fetch is not cached.
    async fn token(&self) -> Result<String, ImdsError> {
        if let Some(t) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(t);
        }
        let token = self
            .with_retries(reqwest::Method::PUT, TOKEN_PATH, None)
            .await?;
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.clone());
        }
        Ok(token)
    }

    async fn get_with_retries(&self, path: &str, token: Option<&str>) -> Result<String, ImdsError> {
        self.with_retries(reqwest::Method::GET, path, token).await
    }

    /// Up to three attempts, sleeping `retry_delays[0]` then `retry_delays[1]` between them.
    /// A 401 to a request carrying a token is returned at once: the same token cannot succeed.
    async fn with_retries(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<String, ImdsError> {
        let mut delays = self.retry_delays.iter();
        loop {
            let error = match self.request(method.clone(), path, token).await {
                Attempt::Body(body) => return Ok(body),
                Attempt::Unauthorized(e) => return Err(e),
                Attempt::Failed(e) => e,
            };
            match delays.next() {
                Some(delay) => {
                    tracing::debug!(error = %error, ?delay, "IMDS request failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(error),
            }
        }
    }

    /// The HTTP client, built on first use. IMDS is plain http (the default endpoint): then
    /// it needs no trust store.
    fn http(&self) -> Result<&reqwest::Client, ImdsError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout)
            // Each request as a whole, so a trickling answer cannot stall the identity.
            .timeout(self.timeout);
        let client = http_only(builder, self.endpoint.starts_with("http://"))
            .build()
            .map_err(|source| ImdsError::Client { source })?;
        Ok(self.http.get_or_init(|| client))
    }

    async fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> Attempt {
        let url = format!("{}{path}", self.endpoint);
        let http = match self.http() {
            Ok(http) => http,
            Err(e) => return Attempt::Failed(e),
        };
        let method_name = if method == reqwest::Method::PUT {
            "PUT"
        } else {
            "GET"
        };
        let mut req = http.request(method, &url);
        if path == TOKEN_PATH {
            req = req.header(
                "X-aws-ec2-metadata-token-ttl-seconds",
                IMDS_TOKEN_TTL_SECONDS.to_string(),
            );
        }
        if let Some(token) = token {
            req = req.header("X-aws-ec2-metadata-token", token);
        }
        let transport = |source| {
            Attempt::Failed(ImdsError::Transport {
                method: method_name,
                url: url.clone(),
                source,
            })
        };
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport(e),
        };
        let status = response.status();
        if !status.is_success() {
            let error = ImdsError::Status {
                path: path.to_owned(),
                code: status.as_u16(),
                message: status.canonical_reason().unwrap_or("").to_owned(),
            };
            return if status == reqwest::StatusCode::UNAUTHORIZED && token.is_some() {
                Attempt::Unauthorized(error)
            } else {
                Attempt::Failed(error)
            };
        }
        match response.text().await {
            Ok(body) => Attempt::Body(body),
            Err(e) => transport(e),
        }
    }
}

/// Why this host's identity could not be established.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    OnPrem(#[from] OnPremError),
    /// The EC2 host identifier could not be read from IMDS.
    #[error(transparent)]
    Imds(#[from] ImdsError),
    /// On-premises host with an IMDS domain the agent does not know.
    #[error("Unknown domain: {0}")]
    UnknownDomain(String),
    /// On-premises host with a region that does not fit its domain.
    #[error("Invalid region: {0}")]
    InvalidRegion(String),
    /// Nothing named a region.
    #[error(
        "no AWS region: set AWS_REGION, the 'region' key of the on-premises configuration, or \
         run on EC2 with the instance metadata service reachable"
    )]
    NoRegion,
}

/// Who this host is and where its service lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The SigV4 signing region: on-premises `region`, else `AWS_REGION`, else IMDS.
    pub region: String,
    /// `HostIdentifier` for every service call.
    pub host_identifier: String,
    /// The on-premises configuration file is readable (§1.3's "on-prem"), whatever it says.
    pub on_prem: bool,
    /// The on-premises configuration, when it names an IAM user or session.
    pub onprem_config: Option<OnPremConfig>,
    /// When IMDS answers: its region and `services/domain` (the endpoint uses these, §1.3 step
    /// 3). `None` when IMDS does not answer or was not asked (`deploy_control_endpoint` set).
    pub imds_location: Option<ImdsLocation>,
}

/// Region and domain as IMDS reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsLocation {
    pub region: Option<String>,
    pub domain: Option<String>,
}

impl Identity {
    /// The region in the endpoint host name: IMDS's when IMDS answers (even if `AWS_REGION`
    /// says otherwise), else the signing region.
    pub fn endpoint_region(&self) -> &str {
        self.imds_location
            .as_ref()
            .and_then(|l| l.region.as_deref())
            .unwrap_or(&self.region)
    }

    /// The domain in the endpoint host name: IMDS's `services/domain` when IMDS answers, else
    /// derived from the region (§1.3 step 4).
    pub fn endpoint_domain(&self) -> String {
        match self.imds_location.as_ref().and_then(|l| l.domain.clone()) {
            Some(d) => d,
            None => domain_for_region(self.endpoint_region()).to_owned(),
        }
    }
}

pub use super::endpoint::domain_for_region;

/// The on-premises check of §1.3 (`partition-region-pattern.json`): the domain must be known
/// and the region must fit it.
pub fn check_onprem_endpoint(domain: &str, region: &str) -> Result<(), IdentityError> {
    let Some(fits) = super::endpoint::region_matches_partition(domain, region) else {
        return Err(IdentityError::UnknownDomain(domain.to_owned()));
    };
    if fits {
        Ok(())
    } else {
        Err(IdentityError::InvalidRegion(region.to_owned()))
    }
}

/// Establishes the host's identity as the AWS agent does (§1.4, §1.3), reading `AWS_REGION`
/// and `AWS_HOST_IDENTIFIER` from the process environment.
pub async fn resolve(config: &Config, imds: &Imds) -> Result<Identity, IdentityError> {
    resolve_with_env(config, imds, |name| std::env::var(name).ok()).await
}

/// [`resolve`] with the environment given as a lookup function (tests pass their own).
///
/// Precedence is the AWS agent's effective one: it writes the on-premises values into `ENV`
/// before reading `ENV`, so the on-premises file beats the environment, which beats IMDS.
pub async fn resolve_with_env(
    config: &Config,
    imds: &Imds,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Identity, IdentityError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let on_prem = onprem::is_readable(&config.on_premises_config_file);
    let onprem_config = if on_prem {
        onprem::load(&config.on_premises_config_file)?
    } else {
        tracing::info!(file = %config.on_premises_config_file.display(), "On Premises config file does not exist or not readable");
        None
    };

    let host_identifier = match (&onprem_config, env("AWS_HOST_IDENTIFIER")) {
        (Some(o), _) => o.host_identifier.clone(),
        (None, Some(id)) => id,
        (None, None) => imds.host_identifier().await?,
    };

    // The endpoint (§1.3) asks IMDS only when no endpoint is configured.
    let imds_location = if config.deploy_control_endpoint.is_none() && imds.is_supported().await {
        Some(ImdsLocation {
            region: imds.region().await,
            domain: imds.domain().await,
        })
    } else {
        None
    };

    let region = match (&onprem_config, env("AWS_REGION")) {
        (Some(o), _) => o.region.clone(),
        (None, Some(r)) => r,
        (None, None) => match imds_location.as_ref().and_then(|l| l.region.clone()) {
            Some(r) => r,
            None => imds.region().await.ok_or(IdentityError::NoRegion)?,
        },
    };

    if on_prem && let Some(location) = &imds_location {
        check_onprem_endpoint(
            location.domain.as_deref().unwrap_or(""),
            location.region.as_deref().unwrap_or(""),
        )?;
    }

    let identity = Identity {
        region,
        host_identifier,
        on_prem,
        onprem_config,
        imds_location,
    };
    tracing::info!(
        region = %identity.region,
        host_identifier = %identity.host_identifier,
        on_prem = identity.on_prem,
        "host identity resolved"
    );
    Ok(identity)
}

/// True when `codedeploy_test_profile` keeps environment credentials (`beta`, `gamma`).
pub fn keeps_environment_credentials(test_profile: &str) -> bool {
    matches!(test_profile, "beta" | "gamma")
}

/// The credentials the agent signs with.
///
/// - On-premises IAM user: the static keys from the file.
/// - On-premises IAM session: the session credentials file, re-read every refresh.
/// - Otherwise the AWS SDK default chain (profile files, web identity, container, then IMDS at
///   `imds_endpoint`), built with the lean HTTP client. Environment credentials are left out,
///   as the AWS agent blanks `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, unless
///   `codedeploy_test_profile` is `beta` or `gamma`.
///
/// The result caches and refreshes in place ([`RefreshingCredentials`]): callers ask it before
/// every request.
pub async fn credentials_provider(
    config: &Config,
    identity: &Identity,
    imds_endpoint: &str,
) -> SharedCredentialsProvider {
    credentials_with_refresh(config, identity, imds_endpoint)
        .await
        .0
}

/// [`credentials_provider`] and the handle that makes its next answer a fresh one: the
/// host-commands client forces a refresh when the service refuses a credential
/// ([`crate::control::ErrorClass::Refresh`]), since a rotated or revoked key can still be
/// inside its cached lifetime.
pub async fn credentials_with_refresh(
    config: &Config,
    identity: &Identity,
    imds_endpoint: &str,
) -> (SharedCredentialsProvider, CredentialsRefresh) {
    let inner = match &identity.onprem_config {
        Some(onprem) => onprem.credentials_provider(),
        None => default_chain(
            &identity.region,
            imds_endpoint,
            keeps_environment_credentials(&config.codedeploy_test_profile),
        ),
    };
    let refreshing = RefreshingCredentials::new(inner);
    let refresh = refreshing.refresh_handle();
    (SharedCredentialsProvider::new(refreshing), refresh)
}

/// The SDK default credentials chain, optionally without the environment provider.
pub fn default_chain(
    region: &str,
    imds_endpoint: &str,
    include_environment: bool,
) -> SharedCredentialsProvider {
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::provider_config::ProviderConfig;

    let conf = ProviderConfig::without_region()
        .with_http_client(sdk_http_client())
        .with_region(Some(aws_config::Region::new(region.to_owned())));
    // The AWS agent's `instance_profile_credentials_retries: 3` and `_timeout: 1`.
    let imds_client = aws_config::imds::Client::builder()
        .configure(&conf)
        .max_attempts(4)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        // The whole credentials call, retries included, so a trickling answer ends too.
        .operation_timeout(Duration::from_secs(10));
    let imds_client = match imds_client.clone().endpoint(imds_endpoint) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(endpoint = imds_endpoint, error = %e, "invalid IMDS endpoint; using the SDK default");
            imds_client
        }
    }
    .build();
    let profile = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .configure(&conf)
        .build();
    let web_identity =
        aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
            .configure(&conf)
            .build();
    let ecs = aws_config::ecs::EcsCredentialsProvider::builder()
        .configure(&conf)
        .build();
    let imds = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
        .configure(&conf)
        .imds_client(imds_client)
        .build();
    let chain = if include_environment {
        CredentialsProviderChain::first_try(
            "Environment",
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else("Profile", profile)
    } else {
        CredentialsProviderChain::first_try("Profile", profile)
    };
    let chain = chain
        .or_else("WebIdentityToken", web_identity)
        .or_else("EcsContainer", ecs)
        .or_else("Ec2InstanceMetadata", imds);
    SharedCredentialsProvider::new(chain)
}

/// How long credentials without an expiry are reused before asking again (the SDK's default).
pub const DEFAULT_CREDENTIALS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Credentials are refreshed this long before they expire.
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(5 * 60);

/// Caches another provider's credentials and asks it again shortly before they expire. One
/// refresh at a time; concurrent callers wait for it. If a refresh fails while the cached
/// credentials are still valid, those are returned.
#[derive(Debug)]
pub struct RefreshingCredentials {
    inner: SharedCredentialsProvider,
    buffer: Duration,
    default_lifetime: Duration,
    cached: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
    refresh: CredentialsRefresh,
}

/// Makes a [`RefreshingCredentials`]' next answer come from its inner provider, whatever the
/// cached credentials' expiry says. Cheap to clone; shared with the provider.
#[derive(Debug, Clone, Default)]
pub struct CredentialsRefresh(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CredentialsRefresh {
    /// The next request for credentials asks the inner provider again. If that fails, the
    /// cached credentials are still used until they expire (as for a scheduled refresh).
    pub fn force(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

impl RefreshingCredentials {
    pub fn new(inner: SharedCredentialsProvider) -> Self {
        Self::with_timing(inner, DEFAULT_REFRESH_BUFFER, DEFAULT_CREDENTIALS_LIFETIME)
    }

    /// `buffer`: refresh this long before expiry; `default_lifetime`: how long to keep
    /// credentials that carry no expiry.
    pub fn with_timing(
        inner: SharedCredentialsProvider,
        buffer: Duration,
        default_lifetime: Duration,
    ) -> Self {
        Self {
            inner,
            buffer,
            default_lifetime,
            cached: tokio::sync::Mutex::new(None),
            refresh: CredentialsRefresh::default(),
        }
    }

    /// The handle that forces the next answer to be a fresh one.
    pub fn refresh_handle(&self) -> CredentialsRefresh {
        self.refresh.clone()
    }

    async fn get(&self) -> provider::Result {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        let forced = self.refresh.take();
        if let Some((creds, expires)) = cached.as_ref()
            && !forced
            && now + self.buffer < *expires
        {
            return Ok(creds.clone());
        }
        match self.inner.provide_credentials().await {
            Ok(creds) => {
                let expires = creds.expiry().unwrap_or(now + self.default_lifetime);
                *cached = Some((creds.clone(), expires));
                Ok(creds)
            }
            Err(e) => match cached.as_ref() {
                Some((creds, expires)) if now < *expires => {
                    tracing::warn!(error = %e, "credentials refresh failed; using the cached ones until they expire");
                    Ok(creds.clone())
                }
                _ => Err(e),
            },
        }
    }
}

impl ProvideCredentials for RefreshingCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_patterns() {
        for (domain, region, ok) in [
            ("amazonaws.com", "us-east-1", true),
            ("amazonaws.com", "a", true),
            ("amazonaws.com", "abcdefghijklmnopqrst", true),
            ("amazonaws.com", "abcdefghijklmnopqrstu", false),
            ("amazonaws.com", "", false),
            ("amazonaws.com", "US-EAST-1", false),
            ("amazonaws.com", "us_east_1", false),
            ("amazonaws.eu", "eusc-de-east-1", true),
            ("amazonaws.com.cn", "cn-north-1", true),
            ("amazonaws.com.cn", "cn-North_x-12", true),
            ("amazonaws.com.cn", "cn-north-1a", false),
            ("amazonaws.com.cn", "cn-north-west-1", false),
            ("amazonaws.com.cn", "cn--1", false),
            ("amazonaws.com.cn", "cn-north-", false),
            ("amazonaws.com.cn", "us-east-1", false),
        ] {
            let r = check_onprem_endpoint(domain, region);
            assert_eq!(r.is_ok(), ok, "{domain} {region}: {r:?}");
            if !ok {
                assert_eq!(
                    r.expect_err("invalid").to_string(),
                    format!("Invalid region: {region}")
                );
            }
        }
        assert_eq!(
            check_onprem_endpoint("example.com", "us-east-1")
                .expect_err("unknown")
                .to_string(),
            "Unknown domain: example.com"
        );
    }

    #[test]
    fn domain_from_region() {
        assert_eq!(domain_for_region("cn-north-1"), "amazonaws.com.cn");
        assert_eq!(domain_for_region("eusc-de-east-1"), "amazonaws.eu");
        assert_eq!(domain_for_region("eusc-de-east-2"), "amazonaws.com");
        assert_eq!(domain_for_region("us-west-2"), "amazonaws.com");
    }
}
