//! S3 revisions (agent-behaviour.md §3.4): `GetObject` streamed into `bundle.tar`, the spec's
//! ETag checked, and large objects fetched as parallel ranged GETs pinned to one object version.
//!
//! The engine is synchronous, so [`S3Fetcher::download`] blocks on a tokio [`Handle`]; call it
//! from a blocking thread (`spawn_blocking`, or a plain thread), never from inside the runtime.
//!
//! Retries: requests go through the SDK's standard retry strategy with 4 attempts (the Ruby
//! agent's SDK default of 3 retries): exponential backoff with full jitter, base 1 s, capped at
//! 20 s, on throttling, 5xx and transient network errors. A response body that breaks off half
//! way is resumed from the last byte written with a ranged GET (`If-Match` on the ETag), up to
//! [`Tuning::body_attempts`] times per range.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use md5::{Digest, Md5};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;

/// What local mode prints (as `ERROR: ...`) when no credentials could be found (§7).
pub const MISSING_CREDENTIALS: &str = "We were unable to download content from the Amazon S3 \
     bucket due to missing or invalid credentials. For information about specifying your AWS \
     credentials, see https://aws.amazon.com/blogs/security/a-new-and-standardized-way-to-manage-credentials-in-the-aws-sdks";

/// Why an S3 bundle could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum S3FetchError {
    /// The spec named an ETag and the object has another one (message as in the AWS agent).
    #[error("Expected deployment artifact bundle etag {expected} but was actually {actual}")]
    EtagMismatch { expected: String, actual: String },
    #[error("{MISSING_CREDENTIALS}")]
    MissingCredentials {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A network failure before any response; `hint` is the AWS agent's suffix (§3.4).
    #[error("unable to connect to {endpoint}: {detail}{hint}")]
    Connect {
        endpoint: String,
        detail: String,
        hint: String,
    },
    /// S3 answered with an error (no such key, access denied, ...).
    #[error("could not download s3://{bucket}/{key}: {code}: {message} (HTTP {status})")]
    Service {
        bucket: String,
        key: String,
        code: String,
        message: String,
        status: u16,
    },
    /// A ranged GET found another object than the first response (overwritten mid-download).
    #[error(
        "s3://{bucket}/{key} changed while it was being downloaded: it no longer has the ETag \
         {etag}; deploy again to fetch the new object"
    )]
    Changed {
        bucket: String,
        key: String,
        etag: String,
    },
    /// The response body broke off and resuming it failed too.
    #[error("could not read s3://{bucket}/{key} at byte {offset}: {detail}")]
    Body {
        bucket: String,
        key: String,
        offset: u64,
        detail: String,
    },
    #[error("downloaded {actual} bytes of s3://{bucket}/{key} but the object has {expected} bytes")]
    Length {
        bucket: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "s3://{bucket}/{key} arrived corrupted: its ETag is the MD5 {etag} but the downloaded \
         data has MD5 {actual}"
    )]
    Corrupt {
        bucket: String,
        key: String,
        etag: String,
        actual: String,
    },
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the S3 client could not be set up: {0}")]
    Setup(String),
    #[error("could not download s3://{bucket}/{key}: {detail}")]
    Other {
        bucket: String,
        key: String,
        detail: String,
    },
}

/// Where and how to reach S3; taken from `codedeployagent.yml` plus the region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub region: String,
    /// `s3_endpoint_override`: wins over everything else.
    pub endpoint_override: Option<String>,
    pub use_fips: bool,
    pub proxy_uri: Option<String>,
}

impl S3Settings {
    pub fn from_config(config: &Config, region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_override: config
                .s3_endpoint_override
                .clone()
                .filter(|e| !e.is_empty()),
            use_fips: config.use_fips_mode,
            proxy_uri: config.proxy_uri.clone().filter(|p| !p.is_empty()),
        }
    }

    /// The endpoint in the AWS agent's order: override, FIPS, the eusc partition, else `None`
    /// (the SDK's default endpoint for the region).
    pub fn endpoint(&self) -> Option<String> {
        if let Some(e) = &self.endpoint_override {
            return Some(e.clone());
        }
        if self.use_fips {
            return Some(format!("https://s3-fips.{}.amazonaws.com", self.region));
        }
        if self.region == "eusc-de-east-1" {
            return Some("https://s3.eusc-de-east-1.amazonaws.eu".into());
        }
        None
    }

    /// The suffix the AWS agent appends to connection errors.
    fn connect_hint(&self) -> String {
        if self.use_fips {
            format!(
                ". Check that Fips exists in {}. Or, try using s3 endpoint override.",
                self.region
            )
        } else {
            ". Try using s3 endpoint override.".into()
        }
    }
}

/// When and how large objects are split into ranged GETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The first GET asks for this many bytes; objects up to this size take one request.
    pub threshold: u64,
    /// The size of each further ranged GET.
    pub part_size: u64,
    /// Ranged GETs in flight at once (the first response counts as one).
    pub parallel: usize,
    /// Reads of one range before giving up when its body keeps breaking off.
    pub body_attempts: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            threshold: 64 << 20,
            part_size: 8 << 20,
            parallel: 4,
            body_attempts: 3,
        }
    }
}

/// One object to fetch.
#[derive(Debug, Clone, Copy)]
pub struct S3Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub version: Option<&'a str>,
    /// The ETag the spec expects, quoted or not.
    pub etag: Option<&'a str>,
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: u64,
    /// As S3 returned it, with quotes.
    pub etag: String,
    pub version_id: Option<String>,
    /// GET requests whose bodies made up the file (1 for small objects).
    pub requests: usize,
    /// True when the data was checked against an MD5 ETag.
    pub md5_verified: bool,
}

/// Downloads S3 bundles with one shared SDK client.
#[derive(Debug, Clone)]
pub struct S3Fetcher {
    /// Built at the first download from `conf`: the SDK builds its TLS connector (and reads
    /// the trust store) when the client is made, and a host that never deploys from S3 must
    /// not need one.
    client: Arc<OnceLock<Client>>,
    conf: aws_sdk_s3::Config,
    handle: Handle,
    settings: S3Settings,
    endpoint: Option<String>,
    tuning: Tuning,
    floor: super::ThroughputFloor,
}

/// Connect within 10 s; each attempt up to its answer's head within twice the stall bound
/// (120 s by default). The body is then held to the [`super::ThroughputFloor`] while it
/// streams, so no part of a GET can trickle for ever.
fn attempt_timeouts(floor: &super::ThroughputFloor) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(floor.stall * 2)
        .build()
}

impl S3Fetcher {
    /// A fetcher for `settings.region` with the given credentials (the daemon passes its
    /// instance-profile or on-premises provider).
    pub fn new(
        settings: S3Settings,
        credentials: SharedCredentialsProvider,
        handle: Handle,
    ) -> Result<Self, S3FetchError> {
        let endpoint = settings.endpoint();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .http_client(http_client(settings.proxy_uri.as_deref())?)
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(attempt_timeouts(&super::ThroughputFloor::DEFAULT));
        if let Some(url) = &endpoint {
            builder = builder
                .endpoint_url(url)
                .force_path_style(host_is_ip_or_localhost(url));
        }
        Ok(Self {
            client: Arc::new(OnceLock::new()),
            conf: builder.build(),
            handle,
            settings,
            endpoint,
            tuning: Tuning::default(),
            floor: super::ThroughputFloor::DEFAULT,
        })
    }

    /// Replaces the throughput floor (`download_*` configuration keys): each attempt's
    /// answer head within twice its stall bound, each range's body held to it.
    pub fn with_throughput_floor(mut self, floor: super::ThroughputFloor) -> Self {
        self.conf = self
            .conf
            .to_builder()
            .timeout_config(attempt_timeouts(&floor))
            .build();
        self.floor = floor;
        self
    }

    /// A fetcher from the SDK's default chains (local mode): credentials from the environment,
    /// profile files or instance metadata; the region from `settings.region` if set, else
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`/the profile; and `AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL` when the config sets no `s3_endpoint_override`.
    pub async fn from_environment(
        mut settings: S3Settings,
        handle: Handle,
    ) -> Result<Self, S3FetchError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client(settings.proxy_uri.as_deref())?);
        if !settings.region.is_empty() {
            loader = loader.region(Region::new(settings.region.clone()));
        }
        let sdk = loader.load().await;
        settings.region = match sdk.region() {
            Some(r) => r.to_string(),
            None => {
                return Err(S3FetchError::Setup(
                    "no AWS region is configured; set AWS_REGION or a region in the AWS profile"
                        .into(),
                ));
            }
        };
        if settings.endpoint_override.is_none() {
            settings.endpoint_override = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
        }
        let credentials =
            sdk.credentials_provider()
                .ok_or_else(|| S3FetchError::MissingCredentials {
                    source: "no credentials provider".into(),
                })?;
        Self::new(settings, credentials, handle)
    }

    /// Replaces the ranged-GET tuning (tests use small parts).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Tuning {
            threshold: tuning.threshold.max(1),
            part_size: tuning.part_size.max(1),
            parallel: tuning.parallel.max(1),
            body_attempts: tuning.body_attempts.max(1),
        };
        self
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Downloads `object` to `dest` (replacing a file or symlink there, never writing through
    /// it). Blocks the calling thread.
    pub fn download(&self, object: &S3Object, dest: &Path) -> Result<Downloaded, S3FetchError> {
        let client = self
            .client
            .get_or_init(|| Client::from_conf(self.conf.clone()))
            .clone();
        let target = Arc::new(Target {
            client,
            bucket: object.bucket.to_owned(),
            key: object.key.to_owned(),
            version: object.version.map(str::to_owned),
            endpoint: self
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("the S3 endpoint for region {}", self.settings.region)),
            hint: self.settings.connect_hint(),
        });
        let fetched = self.handle.block_on(download(
            target.clone(),
            object.etag,
            dest,
            self.tuning,
            self.floor,
        ))?;
        let actual = fs::metadata(dest)
            .map_err(|source| S3FetchError::Io {
                what: "read",
                path: dest.to_path_buf(),
                source,
            })?
            .len();
        if actual != fetched.bytes {
            return Err(S3FetchError::Length {
                bucket: target.bucket.clone(),
                key: target.key.clone(),
                expected: fetched.bytes,
                actual,
            });
        }
        // The MD5 was computed while the bytes were written (see `md5_checkable`).
        let md5_verified = fetched.md5.is_some();
        if let Some(actual) = fetched.md5 {
            let md5_etag = strip_quotes(&fetched.etag);
            if !actual.eq_ignore_ascii_case(md5_etag) {
                return Err(S3FetchError::Corrupt {
                    bucket: target.bucket.clone(),
                    key: target.key.clone(),
                    etag: md5_etag.to_owned(),
                    actual,
                });
            }
        }
        tracing::info!(
            "Download complete from bucket {} and key {}",
            object.bucket,
            object.key
        );
        Ok(Downloaded {
            bytes: fetched.bytes,
            etag: fetched.etag,
            version_id: fetched.version_id,
            requests: fetched.requests,
            md5_verified,
        })
    }
}

/// The lean SDK's HTTP client: hyper + rustls with ring, through `proxy` when given.
pub fn http_client(proxy: Option<&str>) -> Result<SharedHttpClient, S3FetchError> {
    use aws_smithy_http_client::{Builder, Connector, proxy::ProxyConfig, tls};
    let provider = tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring);
    let Some(proxy) = proxy else {
        return Ok(Builder::new().tls_provider(provider).build_https());
    };
    let proxy = ProxyConfig::all(proxy)
        .map_err(|e| S3FetchError::Setup(format!("proxy_uri {proxy} is not usable: {e}")))?;
    Ok(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut builder = Connector::builder()
                .proxy_config(proxy.clone())
                .tls_provider(provider.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder.build()
        }),
    )
}

/// True for `http://127.0.0.1:9000`, `http://[::1]`, `http://localhost`: endpoints where
/// virtual-host addressing (`bucket.127.0.0.1`) cannot work.
pub fn host_is_ip_or_localhost(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return true;
    }
    let host = host.split(':').next().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

/// `bytes 0-9/20` → (10, 20): the bytes this response carries (from 0) and the object size.
fn parse_content_range(range: &str) -> Option<(u64, u64)> {
    let (span, total) = range.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total) = (
        first.parse::<u64>().ok()?,
        last.parse::<u64>().ok()?,
        total.parse::<u64>().ok()?,
    );
    (first == 0 && last < total).then_some((last + 1, total))
}

fn strip_quotes(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// A single-part upload's ETag is the hex MD5 of the data, unless the object is encrypted
/// with SSE-KMS or SSE-C (`opaque`). A multipart ETag is `<md5 of the part md5s>-<parts>` and
/// cannot be checked without the part boundaries, so those objects are only checked for their
/// length (and, on single GETs, by the SDK's CRC checksum when S3 sent one).
fn md5_checkable(etag: &str, opaque: bool) -> bool {
    let etag = strip_quotes(etag);
    !opaque && etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What every range of one download shares.
#[derive(Debug)]
struct Target {
    client: Client,
    bucket: String,
    key: String,
    version: Option<String>,
    endpoint: String,
    hint: String,
}

impl Target {
    fn get(&self, range: Option<String>, if_match: Option<&str>) -> GetRequest {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_version_id(self.version.clone())
            .set_range(range)
            .set_if_match(if_match.filter(|e| !e.is_empty()).map(str::to_owned))
    }

    fn classify(&self, e: SdkError<GetObjectError, HttpResponse>) -> S3FetchError {
        if let Some(source) = credentials_error(&e) {
            return S3FetchError::MissingCredentials {
                source: source.into(),
            };
        }
        match &e {
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => S3FetchError::Connect {
                endpoint: self.endpoint.clone(),
                detail: error_chain(&e),
                hint: self.hint.clone(),
            },
            SdkError::TimeoutError(_) => S3FetchError::Connect {
                endpoint: self.endpoint.clone(),
                detail: error_chain(&e),
                hint: self.hint.clone(),
            },
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                S3FetchError::Service {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    code: e.code().unwrap_or("Unknown").to_owned(),
                    message: e.message().unwrap_or("no message").to_owned(),
                    status,
                }
            }
            _ => S3FetchError::Other {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                detail: error_chain(&e),
            },
        }
    }
}

type GetRequest = aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder;

struct Fetched {
    bytes: u64,
    etag: String,
    version_id: Option<String>,
    requests: usize,
    /// The hex MD5 of the data, when the ETag is one to compare it with.
    md5: Option<String>,
}

async fn download(
    target: Arc<Target>,
    expected_etag: Option<&str>,
    dest: &Path,
    tuning: Tuning,
    floor: super::ThroughputFloor,
) -> Result<Fetched, S3FetchError> {
    // The first GET asks for the first `threshold` bytes: small objects come whole in one
    // request, and large ones reveal their size and ETag while their first bytes stream in.
    let range = format!("bytes=0-{}", tuning.threshold - 1);
    let first = match target.get(Some(range), None).send().await {
        // An empty object has no byte 0, so S3 answers 416; ask again without a range.
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => target
            .get(None, None)
            .send()
            .await
            .map_err(|e| target.classify(e))?,
        other => other.map_err(|e| target.classify(e))?,
    };
    let etag = first.e_tag().unwrap_or_default().to_owned();
    if let Some(expected) = expected_etag
        && strip_quotes(expected) != strip_quotes(&etag)
    {
        return Err(S3FetchError::EtagMismatch {
            expected: expected.to_owned(),
            actual: etag,
        });
    }
    let body_len = u64::try_from(first.content_length().unwrap_or(0)).unwrap_or(0);
    // A 206 says `bytes 0-<last>/<total>`; a 200 (range ignored, or an empty object) is whole.
    let (first_len, total) = first
        .content_range()
        .and_then(parse_content_range)
        .unwrap_or((body_len, body_len));
    let opaque_etag = matches!(
        first.server_side_encryption(),
        Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
    ) || first.sse_customer_algorithm().is_some();
    let version_id = first.version_id().map(str::to_owned);
    let file = Arc::new(
        super::create_bundle_file(dest).map_err(|source| S3FetchError::Io {
            what: "create",
            path: dest.to_path_buf(),
            source,
        })?,
    );
    let ranges = Arc::new(Ranges {
        target: target.clone(),
        etag: etag.clone(),
        file,
        path: dest.to_path_buf(),
        attempts: tuning.body_attempts,
        floor,
        md5: md5_checkable(&etag, opaque_etag).then(OrderedMd5::default),
    });
    let GetObjectOutput { body, .. } = first;
    let mut requests = 1;
    if first_len >= total {
        ranges.fetch(0, total, Some(body)).await?;
    } else {
        let slots = Arc::new(Semaphore::new(tuning.parallel));
        let mut tasks = JoinSet::new();
        // The first response already holds a connection, so it takes one of the slots.
        let slot = slots.clone().acquire_owned().await.ok();
        let r = ranges.clone();
        tasks.spawn(async move {
            let _slot = slot;
            r.fetch(0, first_len, Some(body)).await
        });
        let mut start = first_len;
        while start < total {
            let end = total.min(start + tuning.part_size);
            let (r, slots) = (ranges.clone(), slots.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.ok();
                r.fetch(start, end, None).await
            });
            requests += 1;
            start = end;
        }
        while let Some(joined) = tasks.join_next().await {
            // Dropping `tasks` on return aborts the ranges still running.
            joined.map_err(|e| S3FetchError::Other {
                bucket: target.bucket.clone(),
                key: target.key.clone(),
                detail: format!("a download task failed: {e}"),
            })??;
        }
    }
    let md5 = match &ranges.md5 {
        Some(m) => Some(
            m.finish(&ranges.file, total)
                .map_err(|source| S3FetchError::Io {
                    what: "read",
                    path: dest.to_path_buf(),
                    source,
                })?,
        ),
        None => None,
    };
    ranges.file.sync_all().map_err(|source| S3FetchError::Io {
        what: "write",
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(Fetched {
        bytes: total,
        etag,
        version_id,
        requests,
        md5,
    })
}

/// Byte ranges of one object written at their offsets into one file.
struct Ranges {
    target: Arc<Target>,
    etag: String,
    file: Arc<File>,
    path: PathBuf,
    attempts: u32,
    /// How slow a range's body may be before it is broken off and resumed.
    floor: super::ThroughputFloor,
    /// Fed with every write when the ETag is an MD5.
    md5: Option<OrderedMd5>,
}

impl Ranges {
    /// Writes bytes `start..end` of the object at the same offsets, starting from `body` if
    /// given. A body that breaks off is resumed where it stopped with a ranged GET that only
    /// succeeds while the object still has the first response's ETag.
    async fn fetch(
        &self,
        start: u64,
        end: u64,
        mut body: Option<ByteStream>,
    ) -> Result<(), S3FetchError> {
        let t = &self.target;
        let mut pos = start;
        let mut failures = 0;
        loop {
            let mut stream = match body.take() {
                Some(b) => b,
                None => {
                    let range = format!("bytes={pos}-{}", end - 1);
                    match t.get(Some(range), Some(&self.etag)).send().await {
                        Ok(out) => out.body,
                        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                            return Err(S3FetchError::Changed {
                                bucket: t.bucket.clone(),
                                key: t.key.clone(),
                                etag: self.etag.clone(),
                            });
                        }
                        Err(e) => return Err(t.classify(e)),
                    }
                }
            };
            let detail = match self.copy(&mut stream, &mut pos, end).await {
                Ok(()) if pos == end => return Ok(()),
                Ok(()) => format!(
                    "the response ended after {} of {} bytes",
                    pos - start,
                    end - start
                ),
                Err(detail) => detail,
            };
            failures += 1;
            if failures >= self.attempts {
                return Err(S3FetchError::Body {
                    bucket: t.bucket.clone(),
                    key: t.key.clone(),
                    offset: pos,
                    detail,
                });
            }
            tracing::warn!(
                bucket = %t.bucket, key = %t.key, offset = pos,
                "S3 response broke off ({detail}); resuming"
            );
        }
    }

    /// Streams `body` to the file at `*pos`, advancing it; one chunk in memory at a time.
    async fn copy(&self, body: &mut ByteStream, pos: &mut u64, end: u64) -> Result<(), String> {
        // Each range (or resumed part of one) is held to a throughput floor, so a trickling
        // response breaks off and is resumed instead of holding the download for ever.
        let floor = self.floor;
        let (started, from) = (std::time::Instant::now(), *pos);
        loop {
            let Some(chunk) = tokio::time::timeout(floor.stall, body.next())
                .await
                .map_err(|_| format!("no data for {} s", floor.stall.as_secs()))?
            else {
                break;
            };
            let chunk = chunk.map_err(|e| error_chain(&e))?;
            floor.check(started, *pos + chunk.len() as u64 - from)?;
            let len = chunk.len() as u64;
            if *pos + len > end {
                return Err(format!(
                    "S3 sent more bytes than requested (up to {})",
                    *pos + len
                ));
            }
            // A positional write into the page cache; short enough to do on a runtime thread.
            self.file
                .write_all_at(&chunk, *pos)
                .map_err(|e| format!("could not write {}: {e}", self.path.display()))?;
            if let Some(md5) = &self.md5 {
                md5.written(&self.file, *pos, &chunk)
                    .map_err(|e| format!("could not read {}: {e}", self.path.display()))?;
            }
            *pos += len;
        }
        Ok(())
    }
}

/// The credentials error behind an SDK error, if that is what it is.
fn credentials_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<CredentialsError>().is_some() {
            return Some(error_chain(err));
        }
        current = err.source();
    }
    None
}

/// `outer: inner: innermost`, skipping levels that repeat the previous text.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// The MD5 of a file written in pieces, in any order, computed as they are written: bytes
/// at the hashed frontier go straight into the hasher; pieces written further on are noted,
/// and read back (from the page cache) once every byte before them has been hashed. A single
/// GET is hashed entirely from its chunks; with ranged GETs, the range at the frontier is, and
/// the ranges that finished ahead of it are read back as soon as it reaches them, while the
/// rest of the download is still running. Either way no second pass over the file remains.
#[derive(Default)]
struct OrderedMd5 {
    state: Mutex<Md5State>,
}

#[derive(Default)]
struct Md5State {
    hasher: Md5,
    /// Bytes `0..hashed` are in the hasher.
    hashed: u64,
    /// Written but not yet hashed: start -> end, each piece past `hashed`.
    ahead: BTreeMap<u64, u64>,
}

/// Read-back buffer size when catching up with pieces written ahead of the frontier.
const CATCH_UP_BUF: usize = 256 << 10;

impl OrderedMd5 {
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Md5State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("the MD5 state is poisoned"))
    }

    /// `data` was just written to `file` at `pos`.
    fn written(&self, file: &File, pos: u64, data: &[u8]) -> io::Result<()> {
        let end = pos + data.len() as u64;
        let mut st = self.lock()?;
        if pos != st.hashed {
            // Ahead of the frontier: extend this range's piece, or start one.
            match st.ahead.range_mut(..=pos).next_back() {
                Some((_, e)) if *e == pos => *e = end,
                _ => {
                    st.ahead.insert(pos, end);
                }
            }
            return Ok(());
        }
        st.hasher.update(data);
        st.hashed = end;
        st.catch_up(file, None)
    }

    /// Hashes whatever is still unhashed of `0..total` (normally nothing) and returns the hex MD5.
    fn finish(&self, file: &File, total: u64) -> io::Result<String> {
        let mut st = self.lock()?;
        st.catch_up(file, Some(total))?;
        let hasher = std::mem::take(&mut st.hasher);
        Ok(hex::encode(hasher.finalize()))
    }
}

impl Md5State {
    /// Moves the frontier over the pieces written ahead that now touch it, reading them back
    /// from `file`; with `upto`, over everything up to that offset.
    fn catch_up(&mut self, file: &File, upto: Option<u64>) -> io::Result<()> {
        let mut buf = Vec::new();
        loop {
            let target = match self.ahead.first_key_value() {
                Some((&start, &end)) if start <= self.hashed => {
                    self.ahead.remove(&start);
                    end
                }
                _ => match upto {
                    Some(upto) if upto > self.hashed => {
                        self.ahead.clear();
                        upto
                    }
                    _ => return Ok(()),
                },
            };
            if buf.is_empty() {
                buf = vec![0u8; CATCH_UP_BUF];
            }
            while self.hashed < target {
                let n = usize::try_from(target - self.hashed)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let piece = &mut buf[..n];
                file.read_exact_at(piece, self.hashed)?;
                self.hasher.update(&*piece);
                self.hashed += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(region: &str) -> S3Settings {
        S3Settings {
            region: region.into(),
            ..S3Settings::default()
        }
    }

    #[test]
    fn endpoint_priority() {
        assert_eq!(settings("us-east-1").endpoint(), None);
        assert_eq!(
            settings("eusc-de-east-1").endpoint().as_deref(),
            Some("https://s3.eusc-de-east-1.amazonaws.eu")
        );
        let fips = S3Settings {
            use_fips: true,
            ..settings("us-west-2")
        };
        assert_eq!(
            fips.endpoint().as_deref(),
            Some("https://s3-fips.us-west-2.amazonaws.com")
        );
        let fips_eusc = S3Settings {
            use_fips: true,
            ..settings("eusc-de-east-1")
        };
        assert_eq!(
            fips_eusc.endpoint().as_deref(),
            Some("https://s3-fips.eusc-de-east-1.amazonaws.com")
        );
        let overridden = S3Settings {
            endpoint_override: Some("https://s3.example.internal".into()),
            ..fips
        };
        assert_eq!(
            overridden.endpoint().as_deref(),
            Some("https://s3.example.internal")
        );
    }

    #[test]
    fn connect_hints_are_the_aws_suffixes() {
        assert_eq!(
            settings("us-east-1").connect_hint(),
            ". Try using s3 endpoint override."
        );
        let fips = S3Settings {
            use_fips: true,
            ..settings("us-gov-west-1")
        };
        assert_eq!(
            fips.connect_hint(),
            ". Check that Fips exists in us-gov-west-1. Or, try using s3 endpoint override."
        );
    }

    #[test]
    fn path_style_hosts() {
        for url in [
            "http://127.0.0.1:5000",
            "http://localhost",
            "https://LOCALHOST:443/",
            "http://[::1]:9000",
            "http://user:pw@10.0.0.1/x",
        ] {
            assert!(host_is_ip_or_localhost(url), "{url}");
        }
        for url in ["https://s3.amazonaws.com", "https://minio.internal:9000"] {
            assert!(!host_is_ip_or_localhost(url), "{url}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/20"), Some((10, 20)));
        assert_eq!(parse_content_range("bytes 0-19/20"), Some((20, 20)));
        assert_eq!(parse_content_range("bytes 5-9/20"), None);
        assert_eq!(parse_content_range("bytes 0-9/*"), None);
        assert_eq!(parse_content_range("bytes 0-20/20"), None);
    }

    #[test]
    fn md5_in_any_write_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want: String = Md5::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        // (offset, length) pieces: in order; ranges finishing out of order; one left unreported.
        let orders: [&[(usize, usize)]; 3] = [
            &[(0, 40_000), (40_000, 60_000)],
            &[
                (70_000, 10_000),
                (80_000, 20_000),
                (30_000, 40_000),
                (0, 10_000),
                (10_000, 20_000),
            ],
            &[(50_000, 50_000), (0, 20_000)],
        ];
        for (i, order) in orders.iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .expect("create");
            file.write_all_at(&data, 0).expect("write");
            let md5 = OrderedMd5::default();
            for &(at, len) in *order {
                md5.written(&file, at as u64, &data[at..at + len])
                    .expect("hash");
            }
            assert_eq!(md5.finish(&file, data.len() as u64).expect("finish"), want);
        }
    }

    #[test]
    fn etag_quotes() {
        assert_eq!(strip_quotes("\"abc\""), "abc");
        assert_eq!(strip_quotes("abc"), "abc");
    }
}
