//! The CodeDeploy host-commands service ("CodeDeployCommand", agent-behaviour.md §1): the
//! operations the agent calls, their shapes, and the errors they return. `client` speaks the
//! wire protocol (AWS JSON 1.1 + SigV4); `endpoint` resolves where to; `identity` finds who we
//! are (IMDS or the on-premises configuration).
//!
//! This module never touches the deployment root.

pub mod client;
pub mod endpoint;
pub mod identity;
pub mod onprem;

use std::future::Future;

use serde::{Deserialize, Serialize};

/// A command the service hands this host (`HostCommandInstance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostCommand {
    pub host_command_identifier: String,
    #[serde(default)]
    pub host_identifier: Option<String>,
    #[serde(default)]
    pub deployment_execution_id: Option<String>,
    #[serde(default)]
    pub command_name: Option<String>,
    #[serde(default)]
    pub nonce: Option<i64>,
}

/// An `Envelope`: a format name and a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    pub format: String,
    pub payload: String,
}

impl Envelope {
    /// A `JSON` diagnostics envelope.
    pub fn json(payload: impl Into<String>) -> Self {
        Self {
            format: "JSON".into(),
            payload: payload.into(),
        }
    }
}

/// `DeploymentSpecification`: the agent uses only `GenericEnvelope`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentSpecification {
    #[serde(default)]
    pub generic_envelope: Option<Envelope>,
    #[serde(default)]
    pub variant_id: Option<String>,
    #[serde(default)]
    pub variant_envelope: Option<Envelope>,
}

/// The answer of `GetDeploymentSpecification`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpecificationResponse {
    #[serde(default)]
    pub deployment_system: Option<String>,
    #[serde(default)]
    pub deployment_specification: Option<DeploymentSpecification>,
}

/// `DeploymentCommandStatus`.
pub mod status {
    pub const PENDING: &str = "Pending";
    pub const IN_PROGRESS: &str = "InProgress";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
}

/// What went wrong talking to the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The service answered with an error (`__type` / `x-amzn-ErrorType`).
    #[error("{code}: {message} (HTTP {status})")]
    Service {
        code: String,
        message: String,
        status: u16,
        body: String,
    },
    /// The request never got an answer (connect, TLS, reset, timeout).
    #[error("Network error: {0}")]
    Network(String),
    /// No credentials to sign with.
    #[error(
        "Missing credentials - please check if this instance was started with an IAM instance profile: {0}"
    )]
    Credentials(String),
    /// The answer could not be understood.
    #[error("invalid response from the service: {0}")]
    Decode(String),
}

impl ControlError {
    /// Throttling answers: every caller waits at the shared throttle gate.
    pub fn is_throttling(&self) -> bool {
        match self {
            ControlError::Service {
                code,
                status,
                message,
                ..
            } => {
                let c = code.to_ascii_lowercase();
                *status == 429
                    || c.contains("throttl")
                    || c.contains("rateexceeded")
                    || c == "requestlimitexceeded"
                    || c == "toomanyrequestsexception"
                    || message.to_ascii_lowercase().contains("rate exceeded")
            }
            _ => false,
        }
    }

    /// Worth retrying: everything but a definitive rejection ([`ControlError::class`]).
    pub fn is_retryable(&self) -> bool {
        self.class() != ErrorClass::Rejected
    }

    /// What a caller that owes the service a result does with this error.
    ///
    /// The host-commands model declares only `ClientException` (the request is wrong for the
    /// service: the command is unknown, finished or not this host's) and `ServerException`;
    /// the AWS front end adds throttling and the authentication codes. Only a JSON error the
    /// service itself answered with a 4xx that is not about throttling, time or credentials is
    /// a definitive rejection; a 408, any 5xx, an answer that is not the service's JSON (a
    /// proxy's HTML page, a truncated body) and every network failure are transient.
    pub fn class(&self) -> ErrorClass {
        match self {
            ControlError::Network(_) | ControlError::Decode(_) => ErrorClass::Retry,
            ControlError::Credentials(_) => ErrorClass::Refresh,
            ControlError::Service { status, code, .. } => {
                if self.is_throttling() || *status == 408 || *status >= 500 {
                    ErrorClass::Retry
                } else if REFRESH_CODES.contains(&code.as_str()) {
                    ErrorClass::Refresh
                } else if code.starts_with("Http") && code.ends_with("Error") {
                    // No error code in the answer: not the service speaking (a proxy, a
                    // load balancer's page).
                    ErrorClass::Retry
                } else {
                    ErrorClass::Rejected
                }
            }
        }
    }

    /// The error code to log with a decision.
    pub fn code(&self) -> &str {
        match self {
            ControlError::Service { code, .. } => code,
            ControlError::Network(_) => "NetworkError",
            ControlError::Credentials(_) => "MissingCredentials",
            ControlError::Decode(_) => "InvalidResponse",
        }
    }

    /// A signature refused because this host's clock is off (the client corrects its clock
    /// offset from the answer's `Date` header).
    pub fn is_clock_skew(&self) -> bool {
        match self {
            ControlError::Service { code, message, .. } => {
                let m = message.to_ascii_lowercase();
                matches!(code.as_str(), "RequestTimeTooSkewed" | "RequestExpired")
                    || (matches!(
                        code.as_str(),
                        "InvalidSignatureException" | "SignatureDoesNotMatch"
                    ) && (m.contains("expired")
                        || m.contains("time")
                        || m.contains("date")
                        || m.contains("skew")))
            }
            _ => false,
        }
    }
}

/// Service error codes that mean "our signature or credentials are not good right now": clock
/// skew, an expired or rotated credential. Retried after the clock offset is corrected and
/// with credentials asked for again (the provider refreshes expired ones).
pub const REFRESH_CODES: &[&str] = &[
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
    "RequestExpired",
    "ExpiredTokenException",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "AccessDeniedException",
];

/// The three ways a caller reacts to an error ([`ControlError::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry with backoff.
    Retry,
    /// Signature, clock or credentials: retry once they are refreshed (the next attempt signs
    /// with the corrected clock and asks the provider again).
    Refresh,
    /// The service definitively refused this request: retrying cannot change the answer.
    Rejected,
}

/// The four operations the agent calls. Implemented over HTTP by `client::HttpHostCommands`
/// and by test doubles.
pub trait HostCommands: Send + Sync {
    /// `PollHostCommand`; `None` when there is nothing to do.
    fn poll_host_command(
        &self,
        host_identifier: &str,
    ) -> impl Future<Output = Result<Option<HostCommand>, ControlError>> + Send;

    /// `GetDeploymentSpecification`.
    fn get_deployment_specification(
        &self,
        deployment_execution_id: &str,
        host_identifier: &str,
    ) -> impl Future<Output = Result<SpecificationResponse, ControlError>> + Send;

    /// `PutHostCommandAcknowledgement`; returns the `CommandStatus` the service answered.
    fn put_host_command_acknowledgement(
        &self,
        host_command_identifier: &str,
        diagnostics: Option<&Envelope>,
    ) -> impl Future<Output = Result<Option<String>, ControlError>> + Send;

    /// `PutHostCommandComplete`.
    fn put_host_command_complete(
        &self,
        host_command_identifier: &str,
        command_status: &str,
        diagnostics: Option<&Envelope>,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;
}
