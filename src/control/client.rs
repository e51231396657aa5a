//! The host-commands wire client: AWS JSON 1.1 over HTTPS, signed with SigV4
//! (agent-behaviour.md §1.1, §1.2, §1.6, §1.7).
//!
//! Every operation is `POST /` to the endpoint with `Content-Type: application/x-amz-json-1.1`,
//! `X-Amz-Target: <prefix>.<Operation>` and `x-amz-codedeploy-agent-version`, all three signed.
//! Credentials are asked of the provider on every request, so rotated instance-profile or
//! on-premises credentials are picked up without a restart. No retries happen here: the
//! daemon's poll loop owns backoff and the throttle gate.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::endpoint::ServiceVariant;
use super::{ControlError, Envelope, ErrorClass, HostCommand, HostCommands, SpecificationResponse};
use crate::config::Config;

/// Default `http_read_timeout` (seconds in the configuration file).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(80);
/// aws-sdk-core's default open timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error body is kept in `ControlError::Service::body` and logged.
pub const MAX_KEPT_BODY: usize = 4096;
/// The largest answer read; the service's answers are a few KiB (an envelope payload is at most
/// 8192 characters).
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const AGENT_VERSION_HEADER: &str = "x-amz-codedeploy-agent-version";
/// Where the AWS packages put `.version` when `<root_dir>/../.version` is missing.
const FALLBACK_VERSION_DIR: &str = "/opt/codedeploy-agent";

/// The `x-amz-codedeploy-agent-version` value.
///
/// Like the AWS agent, reads `<opt_root>/.version`, then `/opt/codedeploy-agent/.version`;
/// the file holds one line `agent_version: <value>` and the value is the text after the last
/// `": "`, trimmed. `opt_root` is the directory above `root_dir` (pass `root_dir.join("..")`).
///
/// Where the AWS agent sends `UNKNOWN_VERSION` when neither file exists (or the value is
/// empty), this agent sends `codedeploy-agent-rs/<crate version>` so the service side can tell
/// the implementations apart.
pub fn agent_version_header(opt_root: &Path) -> String {
    let candidates = [
        opt_root.join(".version"),
        Path::new(FALLBACK_VERSION_DIR).join(".version"),
    ];
    version_from_files(&candidates).unwrap_or_else(default_agent_version)
}

/// Writes `<opt_root>/.version` as AWS's v2 agent does at start: `agent_version: <value>`
/// (the value [`default_agent_version`]), mode 0444, replacing whatever an earlier agent left
/// there (a Ruby agent's `OFFICIAL_1.x` would otherwise be sent for this one). Written to a
/// temporary file and renamed, so a reader never sees half a file. Returns the path.
pub fn write_version_file(opt_root: &Path) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::create_dir_all(opt_root)?;
    let path = opt_root.join(".version");
    let tmp = opt_root.join(format!(".version.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(format!("agent_version: {}", default_agent_version()).as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// `codedeploy-agent-rs/<crate version>`: the version header when no `.version` file says
/// otherwise.
pub fn default_agent_version() -> String {
    format!("codedeploy-agent-rs/{}", crate::VERSION)
}

fn version_from_files(candidates: &[std::path::PathBuf]) -> Option<String> {
    for path in candidates {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let value = parse_version_file(&text);
                if value.is_empty() {
                    tracing::warn!(path = %path.display(), "version tracking file has no value");
                    return None;
                }
                tracing::debug!(path = %path.display(), version = value, "version file found");
                return Some(value.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the version tracking file");
            }
        }
    }
    tracing::warn!(
        "Version tracking file either does not exist or cannot be read; sending {}",
        default_agent_version()
    );
    None
}

/// `File.read(path).split(': ').last.strip`.
fn parse_version_file(text: &str) -> &str {
    text.rsplit_once(": ").map_or(text, |(_, v)| v).trim()
}

/// The `User-Agent` this agent sends.
pub fn user_agent() -> String {
    format!(
        "codedeploy-agent-rs/{} (aws-codedeploy-agent drop-in replacement)",
        crate::VERSION
    )
}

/// How to reach and talk to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The endpoint URL (`endpoint::resolve`); requests go to its root.
    pub endpoint: String,
    /// The SigV4 signing region (the configured region).
    pub region: String,
    /// Default or secure model: signing name and target prefix.
    pub variant: ServiceVariant,
    /// The `x-amz-codedeploy-agent-version` value (`agent_version_header`).
    pub agent_version: String,
    /// `:proxy_uri:`, e.g. `http://user:pass@proxy:3128`. Without it no proxy is used, not even
    /// one from `HTTPS_PROXY`: the AWS agent passes only this setting to its client.
    pub proxy_uri: Option<String>,
    /// Per-read timeout, including the wait for the response head (`http_read_timeout`).
    pub read_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// The bound of one whole request, connection, answer head and body together:
    /// `connect_timeout + read_timeout`.
    pub fn request_timeout(&self) -> Duration {
        self.connect_timeout + self.read_timeout
    }

    /// A configuration with the default timeouts and no proxy.
    pub fn new(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        variant: ServiceVariant,
        agent_version: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            region: region.into(),
            variant,
            agent_version: agent_version.into(),
            proxy_uri: None,
            read_timeout: DEFAULT_READ_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Takes `enable_auth_policy`, `proxy_uri` and `http_read_timeout` from the agent
    /// configuration; the endpoint and region are resolved by the caller.
    pub fn from_config(
        config: &Config,
        endpoint: impl Into<String>,
        region: impl Into<String>,
        agent_version: impl Into<String>,
    ) -> Self {
        Self {
            proxy_uri: config.proxy_uri.clone().filter(|p| !p.trim().is_empty()),
            read_timeout: Duration::from_secs(config.http_read_timeout),
            ..Self::new(
                endpoint,
                region,
                ServiceVariant::from_auth_policy(config.enable_auth_policy),
                agent_version,
            )
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, Error)]
pub enum ClientBuildError {
    #[error("invalid CodeDeploy endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("invalid proxy_uri {uri:?}: {source}")]
    Proxy {
        uri: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invalid agent version {0:?}: not a valid HTTP header value")]
    AgentVersion(String),
    #[error("cannot build the HTTP client for the CodeDeploy endpoint: {}", crate::control::identity::tls_client_error(.0))]
    Http(#[source] reqwest::Error),
}

/// `HostCommands` over HTTP.
#[derive(Debug, Clone)]
pub struct HttpHostCommands {
    http: reqwest::Client,
    config: ClientConfig,
    /// The endpoint with its path normalised (`https://host/`): signed and sent identically.
    url: reqwest::Url,
    credentials: SharedCredentialsProvider,
    /// How far the service's clock is ahead of ours (milliseconds, may be negative), learnt
    /// from the `Date` header of a clock-skew refusal; requests are signed with our clock plus
    /// this.
    clock_offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Forces the credentials provider to fetch anew after the service refused a credential.
    refresh: Option<crate::control::identity::CredentialsRefresh>,
}

impl HttpHostCommands {
    /// Builds the client. Installs the ring crypto provider for rustls if none is installed.
    pub fn new(
        config: ClientConfig,
        credentials: SharedCredentialsProvider,
    ) -> Result<Self, ClientBuildError> {
        let url =
            reqwest::Url::parse(&config.endpoint).map_err(|e| ClientBuildError::Endpoint {
                url: config.endpoint.clone(),
                reason: e.to_string(),
            })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ClientBuildError::Endpoint {
                url: config.endpoint.clone(),
                reason: "expected an http:// or https:// URL with a host".into(),
            });
        }
        if http::HeaderValue::from_str(&config.agent_version).is_err() {
            return Err(ClientBuildError::AgentVersion(config.agent_version.clone()));
        }
        // Already installed (by us or the S3 client) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent())
            .read_timeout(config.read_timeout)
            .connect_timeout(config.connect_timeout)
            // The whole exchange, not each read: a reply trickling a byte at a time must not
            // hold a poll open for ever.
            .timeout(config.request_timeout())
            // aws-sdk does not follow redirects; a redirected POST would turn into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(uri) = &config.proxy_uri {
            let proxy =
                reqwest::Proxy::all(uri.as_str()).map_err(|source| ClientBuildError::Proxy {
                    uri: redact_userinfo(uri),
                    source,
                })?;
            builder = builder.proxy(proxy);
        }
        // A plain-http endpoint (a local service, tests) needs no trust store, unless an https
        // proxy is in the way.
        let plain_http = url.scheme() == "http"
            && config
                .proxy_uri
                .as_deref()
                .is_none_or(|p| p.starts_with("http://"));
        let http = crate::control::identity::http_only(builder, plain_http)
            .build()
            .map_err(ClientBuildError::Http)?;
        Ok(Self {
            http,
            config,
            url,
            credentials,
            clock_offset_ms: std::sync::Arc::default(),
            refresh: None,
        })
    }

    /// After a refusal of class [`ErrorClass::Refresh`] that is not about the clock (an
    /// expired, rotated or revoked credential), the next call signs with credentials fetched
    /// anew instead of the cached ones.
    pub fn with_credentials_refresh(
        mut self,
        refresh: crate::control::identity::CredentialsRefresh,
    ) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// The service's clock as far as we know it: ours, corrected by the learnt offset.
    fn service_now(&self) -> SystemTime {
        let offset = self
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = SystemTime::now();
        let delta = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            now + delta
        } else {
            now.checked_sub(delta).unwrap_or(now)
        }
    }

    /// The clock offset currently applied to signatures, in milliseconds.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The whole answer, refusing one larger than `MAX_RESPONSE_BODY`.
    async fn read_body(
        &self,
        operation: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ControlError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.network_error(operation, &e))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(ControlError::Decode(format!(
                    "{operation}: the answer is larger than {MAX_RESPONSE_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn network_error(&self, operation: &str, e: &reqwest::Error) -> ControlError {
        let mut text = format!("{operation}: ");
        if e.is_timeout() {
            let _ = if e.is_connect() {
                write!(
                    text,
                    "connect timed out after {}s: ",
                    self.config.connect_timeout.as_secs_f64()
                )
            } else {
                write!(
                    text,
                    "timed out (read timeout {}s, whole request {}s): ",
                    self.config.read_timeout.as_secs_f64(),
                    self.config.request_timeout().as_secs_f64()
                )
            };
        }
        text.push_str(&error_chain(e));
        ControlError::Network(text)
    }

    /// One JSON 1.1 call: sign, send, and decode the answer or the error.
    async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> Result<O, ControlError> {
        let body = serde_json::to_vec(input)
            .map_err(|e| ControlError::Decode(format!("cannot encode {operation}: {e}")))?;
        let target = format!("{}.{operation}", self.config.variant.target_prefix());
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| ControlError::Credentials(error_chain(&e)))?;
        let identity: Identity = credentials.into();

        let unsigned = [
            ("content-type", CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
            (AGENT_VERSION_HEADER, self.config.agent_version.as_str()),
        ];
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name(self.config.variant.signing_name())
            .time(self.service_now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ControlError::Credentials(format!("cannot sign {operation}: {e}")))?;
        let signable = SignableRequest::new(
            "POST",
            self.url.as_str(),
            unsigned.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| ControlError::Credentials(format!("cannot sign {operation}: {e}")))?;
        let (instructions, _signature) = sign(signable, &params.into())
            .map_err(|e| ControlError::Credentials(format!("cannot sign {operation}: {e}")))?
            .into_parts();

        let mut request = self.http.post(self.url.clone());
        for (name, value) in unsigned {
            request = request.header(name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.network_error(operation, &e))?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let bytes = self.read_body(operation, response).await?;
        tracing::debug!(
            operation,
            status = status.as_u16(),
            request_id,
            body = %String::from_utf8_lossy(truncate(&bytes)),
            "host-commands response"
        );
        if !status.is_success() {
            let error = service_error(status.as_u16(), error_type.as_deref(), &bytes);
            if error.is_clock_skew() {
                self.learn_clock_offset(operation, date);
            } else if error.class() == ErrorClass::Refresh
                && let Some(refresh) = &self.refresh
            {
                tracing::info!(
                    operation,
                    code = error.code(),
                    "the service refused our credentials; fetching them anew for the next call"
                );
                refresh.force();
            }
            return Err(error);
        }
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| {
            ControlError::Decode(format!(
                "{operation}: {e}: {}",
                String::from_utf8_lossy(truncate(bytes))
            ))
        })
    }
}

impl HttpHostCommands {
    /// After a clock-skew refusal: the service's `Date` says how far off our clock is.
    fn learn_clock_offset(&self, operation: &str, server: Option<SystemTime>) {
        let Some(server) = server else {
            tracing::warn!(
                operation,
                "the service refused the request's time, and its answer has no Date header to correct the clock from; check this host's clock (NTP)"
            );
            return;
        };
        let now = SystemTime::now();
        let ms = match server.duration_since(now) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        self.clock_offset_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            operation,
            offset_s = ms as f64 / 1000.0,
            "this host's clock differs from the service's by {:.1}s; signing with the service's time from now on (fix the host's clock: NTP)",
            ms as f64 / 1000.0
        );
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate).
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut it = value.split_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if zone != "GMT" || it.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = i64::try_from(MONTHS.iter().position(|&n| n == month)? + 1).ok()?;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Request and response shapes (§1.2): PascalCase members, nil members left out.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PollRequest<'a> {
    host_identifier: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PollResponse {
    #[serde(default)]
    host_command: Option<HostCommand>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SpecificationRequest<'a> {
    deployment_execution_id: &'a str,
    host_identifier: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AcknowledgementRequest<'a> {
    host_command_identifier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostics: Option<&'a Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AcknowledgementResponse {
    #[serde(default)]
    command_status: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CompleteRequest<'a> {
    host_command_identifier: &'a str,
    command_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostics: Option<&'a Envelope>,
}

/// `PutHostCommandComplete` answers an empty structure; anything else is ignored.
#[derive(Deserialize)]
struct Empty {}

impl HostCommands for HttpHostCommands {
    async fn poll_host_command(
        &self,
        host_identifier: &str,
    ) -> Result<Option<HostCommand>, ControlError> {
        let out: PollResponse = self
            .call("PollHostCommand", &PollRequest { host_identifier })
            .await?;
        Ok(out.host_command)
    }

    async fn get_deployment_specification(
        &self,
        deployment_execution_id: &str,
        host_identifier: &str,
    ) -> Result<SpecificationResponse, ControlError> {
        self.call(
            "GetDeploymentSpecification",
            &SpecificationRequest {
                deployment_execution_id,
                host_identifier,
            },
        )
        .await
    }

    async fn put_host_command_acknowledgement(
        &self,
        host_command_identifier: &str,
        diagnostics: Option<&Envelope>,
    ) -> Result<Option<String>, ControlError> {
        let out: AcknowledgementResponse = self
            .call(
                "PutHostCommandAcknowledgement",
                &AcknowledgementRequest {
                    host_command_identifier,
                    diagnostics,
                },
            )
            .await?;
        Ok(out.command_status)
    }

    async fn put_host_command_complete(
        &self,
        host_command_identifier: &str,
        command_status: &str,
        diagnostics: Option<&Envelope>,
    ) -> Result<(), ControlError> {
        let _: Empty = self
            .call(
                "PutHostCommandComplete",
                &CompleteRequest {
                    host_command_identifier,
                    command_status,
                    diagnostics,
                },
            )
            .await?;
        Ok(())
    }
}

/// A non-2xx answer as aws-sdk-core reads it: the code from the body's `__type` (or `code`),
/// else the `x-amzn-ErrorType` header, keeping the part after `#` (and before `:` for the
/// header); else `Http<status>Error`. The message from `message` or `Message`.
fn service_error(status: u16, error_type_header: Option<&str>, body: &[u8]) -> ControlError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let obj = json.as_ref()?.as_object()?;
        names
            .iter()
            .find_map(|n| obj.get(*n)?.as_str().map(str::to_owned))
    };
    let code = field(&["__type", "code", "Code"])
        .or_else(|| {
            error_type_header.map(|h| h.split_once(':').map_or(h, |(code, _)| code).to_owned())
        })
        .map(|c| c.rsplit('#').next().unwrap_or_default().trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("Http{status}Error"));
    let message = field(&["message", "Message", "errorMessage"]).unwrap_or_default();
    ControlError::Service {
        code,
        message,
        status,
        body: String::from_utf8_lossy(truncate(body)).into_owned(),
    }
}

fn truncate(body: &[u8]) -> &[u8] {
    &body[..body.len().min(MAX_KEPT_BODY)]
}

/// `e: cause: cause`, skipping a cause whose text the previous one already contains.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The proxy URI without its password, for error messages.
fn redact_userinfo(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("REDACTED"));
            url.to_string()
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_file_value_is_the_text_after_the_colon() {
        assert_eq!(
            parse_version_file("agent_version: OFFICIAL_1.8.1-7_deb\n"),
            "OFFICIAL_1.8.1-7_deb"
        );
        assert_eq!(
            parse_version_file("agent_version: COMMIT_abc"),
            "COMMIT_abc"
        );
        assert_eq!(parse_version_file("  bare \n"), "bare");
    }

    #[test]
    fn version_files_are_tried_in_order_then_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("a/.version");
        let second = dir.path().join("b/.version");
        std::fs::create_dir_all(dir.path().join("b")).expect("mkdir");
        std::fs::write(&second, "agent_version: OFFICIAL_1.8.1\n").expect("write");
        let candidates = [first.clone(), second];
        assert_eq!(
            version_from_files(&candidates).as_deref(),
            Some("OFFICIAL_1.8.1")
        );
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        std::fs::write(&first, "agent_version: COMMIT_1234\n").expect("write");
        assert_eq!(
            version_from_files(&candidates).as_deref(),
            Some("COMMIT_1234")
        );
        assert_eq!(version_from_files(&[dir.path().join("none")]), None);
        assert_eq!(
            default_agent_version(),
            format!("codedeploy-agent-rs/{}", crate::VERSION)
        );
        // The public entry point reads <opt_root>/.version first.
        assert_eq!(agent_version_header(&dir.path().join("a")), "COMMIT_1234");
    }

    #[test]
    fn error_code_from_type_header_or_status() {
        let e = service_error(
            400,
            None,
            br#"{"__type":"com.amazonaws.codedeploy#ClientException","message":"bad"}"#,
        );
        assert_eq!(
            e,
            ControlError::Service {
                code: "ClientException".into(),
                message: "bad".into(),
                status: 400,
                body: r#"{"__type":"com.amazonaws.codedeploy#ClientException","message":"bad"}"#
                    .into(),
            }
        );
        let e = service_error(
            400,
            Some("ThrottlingException:http://internal.amazon.com/"),
            br#"{"Message":"Rate exceeded"}"#,
        );
        assert!(
            matches!(&e, ControlError::Service { code, message, .. } if code == "ThrottlingException" && message == "Rate exceeded")
        );
        assert!(e.is_throttling());
        let e = service_error(502, None, b"<html>bad gateway</html>");
        assert!(
            matches!(&e, ControlError::Service { code, message, body, .. } if code == "Http502Error" && message.is_empty() && body == "<html>bad gateway</html>")
        );
        let big = vec![b'x'; MAX_KEPT_BODY * 2];
        let ControlError::Service { body, .. } = service_error(500, None, &big) else {
            panic!("service error expected");
        };
        assert_eq!(body.len(), MAX_KEPT_BODY);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn error_classes() {
        use crate::control::ErrorClass;
        let e = |status, code: &str, message: &str| ControlError::Service {
            code: code.into(),
            message: message.into(),
            status,
            body: String::new(),
        };
        assert_eq!(e(400, "ClientException", "").class(), ErrorClass::Rejected);
        assert_eq!(
            e(400, "ValidationException", "").class(),
            ErrorClass::Rejected
        );
        assert_eq!(e(400, "ThrottlingException", "").class(), ErrorClass::Retry);
        assert_eq!(e(408, "RequestTimeout", "").class(), ErrorClass::Retry);
        assert_eq!(e(503, "Http503Error", "").class(), ErrorClass::Retry);
        assert_eq!(e(403, "Http403Error", "").class(), ErrorClass::Retry);
        assert_eq!(e(500, "ServerException", "").class(), ErrorClass::Retry);
        for code in [
            "InvalidSignatureException",
            "ExpiredTokenException",
            "UnrecognizedClientException",
        ] {
            assert_eq!(e(400, code, "").class(), ErrorClass::Refresh, "{code}");
        }
        assert_eq!(
            ControlError::Decode("<html>".into()).class(),
            ErrorClass::Retry
        );
        assert!(
            e(
                400,
                "InvalidSignatureException",
                "Signature expired: 20260101T000000Z is now earlier than 20260101T000500Z"
            )
            .is_clock_skew()
        );
        assert!(
            !e(
                400,
                "InvalidSignatureException",
                "The request signature we calculated does not match"
            )
            .is_clock_skew()
        );
    }

    #[test]
    fn request_shapes_omit_nil_members() {
        let ack = AcknowledgementRequest {
            host_command_identifier: "hc-1",
            diagnostics: None,
        };
        assert_eq!(
            serde_json::to_string(&ack).expect("json"),
            r#"{"HostCommandIdentifier":"hc-1"}"#
        );
        let env = Envelope::json("{}");
        let complete = CompleteRequest {
            host_command_identifier: "hc-1",
            command_status: "Succeeded",
            diagnostics: Some(&env),
        };
        assert_eq!(
            serde_json::to_string(&complete).expect("json"),
            r#"{"HostCommandIdentifier":"hc-1","CommandStatus":"Succeeded","Diagnostics":{"Format":"JSON","Payload":"{}"}}"#
        );
    }

    #[test]
    fn client_config_from_the_agent_config() {
        let mut config = Config::system_defaults();
        config.enable_auth_policy = true;
        config.proxy_uri = Some("http://proxy:3128".into());
        config.http_read_timeout = 5;
        let c = ClientConfig::from_config(&config, "https://e", "us-west-2", "v1");
        assert_eq!(c.variant, ServiceVariant::Secure);
        assert_eq!(c.proxy_uri.as_deref(), Some("http://proxy:3128"));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(
            (c.endpoint.as_str(), c.region.as_str()),
            ("https://e", "us-west-2")
        );
        // The shipped file's empty `:proxy_uri:` means no proxy.
        config.proxy_uri = Some(String::new());
        config.enable_auth_policy = false;
        let c = ClientConfig::from_config(&config, "https://e", "us-west-2", "v1");
        assert_eq!(c.proxy_uri, None);
        assert_eq!(c.variant, ServiceVariant::Default);
        let d = ClientConfig::from_config(&Config::system_defaults(), "https://e", "r", "v");
        assert_eq!(d.read_timeout, DEFAULT_READ_TIMEOUT);
    }

    #[test]
    fn proxy_password_is_redacted() {
        assert_eq!(
            redact_userinfo("http://user:secret@proxy:3128"),
            "http://user:REDACTED@proxy:3128/"
        );
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn bad_endpoint_and_version_are_rejected() {
        let creds = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            "AK", "SK", None, None, "test",
        ));
        let cfg = ClientConfig::new("not a url", "us-east-1", ServiceVariant::Default, "v");
        assert!(matches!(
            HttpHostCommands::new(cfg, creds.clone()),
            Err(ClientBuildError::Endpoint { .. })
        ));
        let cfg = ClientConfig::new(
            "https://x.example",
            "us-east-1",
            ServiceVariant::Default,
            "bad\nversion",
        );
        assert!(matches!(
            HttpHostCommands::new(cfg, creds),
            Err(ClientBuildError::AgentVersion(_))
        ));
    }
}
