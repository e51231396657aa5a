//! The on-premises configuration (`codedeploy.onpremises.yml`, agent-behaviour.md §8.2): who an
//! on-premises host is and how it gets credentials.
//!
//! The AWS agent writes what it reads into the process environment (`AWS_REGION`,
//! `AWS_HOST_IDENTIFIER`, `AWS_ACCESS_KEY`, ...). This module returns a typed [`OnPremConfig`]
//! instead and leaves the environment alone; `identity` decides what wins.
//!
//! It also owns [`SessionFileCredentials`], the provider for the IAM-session mode: it re-reads
//! the shared credentials file (profile `default`) on every refresh and stamps the result with an
//! expiry of now + 1800 s, as the AWS agent's `FileCredentials` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use saphyr_parser::{Event, Parser, ScalarStyle};

/// How long credentials read from the session file are trusted before the file is read again.
pub const SESSION_CREDENTIALS_LIFETIME: Duration = Duration::from_secs(1800);

/// Why the on-premises configuration could not be used. The messages are the AWS agent's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnPremError {
    /// The file is readable but is not a YAML mapping of plain keys.
    #[error(
        "The deployment failed because the format of the following on-premises configuration file is invalid: {}",
        path.display()
    )]
    InvalidFormat {
        path: PathBuf,
        /// What the parser objected to (ours; not part of the AWS message).
        reason: String,
    },
    #[error("On Premises config cannot contain both 'iam_user_arn' and 'iam_session_arn' keys.")]
    BothArns { path: PathBuf },
    #[error("'{key}' key is required when 'iam_user_arn' is provided.")]
    MissingIamUserKey { path: PathBuf, key: &'static str },
    #[error("'{key}' key is required when 'iam_session_arn' is provided.")]
    MissingIamSessionKey { path: PathBuf, key: &'static str },
    /// The IAM-session credentials file gave no credentials (`path` is that file).
    #[error("Failed to load credentials from path {}", path.display())]
    CredentialsFile {
        path: PathBuf,
        /// What exactly was wrong (ours; not part of the AWS message).
        reason: String,
    },
}

/// Where an on-premises host's credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum OnPremCredentials {
    /// IAM user: static keys from the configuration file.
    IamUser {
        access_key_id: String,
        secret_access_key: String,
    },
    /// IAM session: a shared credentials file that something else keeps fresh.
    IamSession { credentials_file: PathBuf },
}

impl std::fmt::Debug for OnPremCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnPremCredentials::IamUser { access_key_id, .. } => f
                .debug_struct("IamUser")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"** redacted **")
                .finish(),
            OnPremCredentials::IamSession { credentials_file } => f
                .debug_struct("IamSession")
                .field("credentials_file", credentials_file)
                .finish(),
        }
    }
}

/// A usable on-premises configuration: one of the two modes of §8.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnPremConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// `region`.
    pub region: String,
    /// `iam_user_arn` or `iam_session_arn`, verbatim: the host identifier.
    pub host_identifier: String,
    pub credentials: OnPremCredentials,
}

impl OnPremConfig {
    /// A credentials provider for this configuration: static keys for an IAM user, a
    /// [`SessionFileCredentials`] for an IAM session.
    pub fn credentials_provider(
        &self,
    ) -> aws_credential_types::provider::SharedCredentialsProvider {
        use aws_credential_types::provider::SharedCredentialsProvider;
        match &self.credentials {
            OnPremCredentials::IamUser {
                access_key_id,
                secret_access_key,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "OnPremisesIamUser",
            )),
            OnPremCredentials::IamSession { credentials_file } => {
                SharedCredentialsProvider::new(SessionFileCredentials::new(credentials_file))
            }
        }
    }
}

/// True when `path` exists and this process may read it: the AWS agent's test for "on-prem"
/// (`File.exists? && File.readable?`), which also switches on the endpoint checks of §1.3.
pub fn is_readable(path: &Path) -> bool {
    path.exists() && nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_ok()
}

/// Reads the on-premises configuration at `path`.
///
/// `Ok(None)` when the file is absent or unreadable, or names neither ARN (the host is then
/// identified through IMDS).
pub fn load(path: &Path) -> Result<Option<OnPremConfig>, OnPremError> {
    if !is_readable(path) {
        tracing::info!(file = %path.display(), "On Premises config file does not exist or not readable");
        return Ok(None);
    }
    let text = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
    let text = String::from_utf8(text).map_err(|e| invalid(path, e.to_string()))?;
    parse(&text, path)
}

/// Interprets on-premises configuration text; `path` is used in messages and kept in the
/// result.
pub fn parse(text: &str, path: &Path) -> Result<Option<OnPremConfig>, OnPremError> {
    let values = read_mapping(text).map_err(|reason| {
        tracing::error!(file = %path.display(), %reason, "Invalid on premises config file");
        invalid(path, reason)
    })?;
    let get = |key: &str| values.get(key).cloned().flatten();
    let user_arn = get("iam_user_arn");
    let session_arn = get("iam_session_arn");
    match (user_arn, session_arn) {
        (Some(_), Some(_)) => Err(OnPremError::BothArns {
            path: path.to_path_buf(),
        }),
        (Some(arn), None) => {
            let require = |key: &'static str| {
                get(key).ok_or_else(|| OnPremError::MissingIamUserKey {
                    path: path.to_path_buf(),
                    key,
                })
            };
            let region = require("region")?;
            let access_key_id = require("aws_access_key_id")?;
            let secret_access_key = require("aws_secret_access_key")?;
            Ok(Some(OnPremConfig {
                path: path.to_path_buf(),
                region,
                host_identifier: arn,
                credentials: OnPremCredentials::IamUser {
                    access_key_id,
                    secret_access_key,
                },
            }))
        }
        (None, Some(arn)) => {
            let require = |key: &'static str| {
                get(key).ok_or_else(|| OnPremError::MissingIamSessionKey {
                    path: path.to_path_buf(),
                    key,
                })
            };
            let region = require("region")?;
            let credentials_file = require("aws_credentials_file")?;
            Ok(Some(OnPremConfig {
                path: path.to_path_buf(),
                region,
                host_identifier: arn,
                credentials: OnPremCredentials::IamSession {
                    credentials_file: PathBuf::from(credentials_file),
                },
            }))
        }
        (None, None) => Ok(None),
    }
}

fn invalid(path: &Path, reason: String) -> OnPremError {
    OnPremError::InvalidFormat {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads a YAML mapping of plain keys to scalars. A value is `None` when Ruby would see it as
/// absent (`nil` or `false`); every other scalar is kept as written. Like Ruby's
/// `YAML.load(...).symbolize_keys`, anything that is not a mapping (an empty file included) is
/// an error; so are aliases (Psych 4 refuses them) and nested values (Ruby cannot put them in
/// the environment).
fn read_mapping(text: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out = BTreeMap::new();
    let mut depth = 0usize;
    let mut key: Option<String> = None;
    let mut seen_mapping = false;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            format!(
                "{} at line {} column {}",
                e.info(),
                e.marker().line(),
                e.marker().col() + 1
            )
        })?;
        let at = || format!("line {} column {}", span.start.line(), span.start.col() + 1);
        match event {
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
            Event::Alias(_) => return Err(format!("aliases are not supported ({})", at())),
            Event::MappingStart(..) if depth == 0 => {
                if seen_mapping {
                    return Err(format!("only one document is allowed ({})", at()));
                }
                seen_mapping = true;
                depth = 1;
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let name = key.take().unwrap_or_default();
                return Err(if depth == 0 {
                    format!("the file must be a mapping of keys to values ({})", at())
                } else {
                    format!("'{name}' must be a single value ({})", at())
                });
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Scalar(value, style, ..) => {
                if depth == 0 {
                    return Err(format!(
                        "the file must be a mapping of keys to values ({})",
                        at()
                    ));
                }
                match key.take() {
                    None => key = Some(value.into_owned()),
                    Some(k) => {
                        out.insert(k, scalar(&value, style));
                    }
                }
            }
        }
    }
    if !seen_mapping {
        return Err("the file must be a mapping of keys to values".into());
    }
    Ok(out)
}

/// A scalar as Ruby sees it for a truthiness test: `nil` and `false` are absent.
fn scalar(text: &str, style: ScalarStyle) -> Option<String> {
    if style == ScalarStyle::Plain
        && matches!(
            text,
            "" | "~"
                | "null"
                | "Null"
                | "NULL"
                | "false"
                | "False"
                | "FALSE"
                | "no"
                | "No"
                | "NO"
                | "off"
                | "Off"
                | "OFF"
        )
    {
        return None;
    }
    Some(text.to_owned())
}

/// Credentials read from a shared credentials file (profile `default`), re-read on every call.
/// Each answer expires [`SESSION_CREDENTIALS_LIFETIME`] from now, so a caching layer (the SDK's
/// identity cache, or `identity::RefreshingCredentials`) comes back for fresh ones.
#[derive(Debug, Clone)]
pub struct SessionFileCredentials {
    path: PathBuf,
}

impl SessionFileCredentials {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now.
    pub fn load(&self) -> Result<Credentials, OnPremError> {
        let fail = |reason: String| OnPremError::CredentialsFile {
            path: self.path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| fail(e.to_string()))?;
        let profile = default_profile(&text).ok_or_else(|| fail("no [default] profile".into()))?;
        let field = |name: &str| profile.get(name).filter(|v| !v.is_empty()).cloned();
        let access_key_id =
            field("aws_access_key_id").ok_or_else(|| fail("no aws_access_key_id".into()))?;
        let secret_access_key = field("aws_secret_access_key")
            .ok_or_else(|| fail("no aws_secret_access_key".into()))?;
        let session_token = field("aws_session_token").or_else(|| field("aws_security_token"));
        Ok(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            Some(SystemTime::now() + SESSION_CREDENTIALS_LIFETIME),
            "OnPremisesSessionFile",
        ))
    }
}

impl ProvideCredentials for SessionFileCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let result: provider::Result = self.load().map_err(|e| {
            if let OnPremError::CredentialsFile { reason, .. } = &e {
                tracing::error!(%reason, "{e}");
            }
            CredentialsError::provider_error(e)
        });
        future::ProvideCredentials::ready(result)
    }
}

/// The `[default]` section of an INI-style shared credentials file, keys lower-cased.
fn default_profile(text: &str) -> Option<BTreeMap<String, String>> {
    let mut section: Option<&str> = None;
    let mut found = false;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim());
            found |= section == Some("default");
            continue;
        }
        if section != Some("default") {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_ignores_other_sections_and_comments() {
        let p = default_profile(
            "[other]\naws_access_key_id = X\n# c\n[default]\nAWS_ACCESS_KEY_ID = A\naws_secret_access_key=B\n; c\n",
        )
        .expect("default");
        assert_eq!(p.get("aws_access_key_id").map(String::as_str), Some("A"));
        assert_eq!(
            p.get("aws_secret_access_key").map(String::as_str),
            Some("B")
        );
        assert!(default_profile("[other]\na=b\n").is_none());
    }

    #[test]
    fn false_and_null_values_count_as_missing() {
        let m = read_mapping("a: false\nb: ~\nc:\nd: 'false'\ne: 123\n").expect("mapping");
        assert_eq!(m.get("a"), Some(&None));
        assert_eq!(m.get("b"), Some(&None));
        assert_eq!(m.get("c"), Some(&None));
        assert_eq!(m.get("d"), Some(&Some("false".into())));
        assert_eq!(m.get("e"), Some(&Some("123".into())));
    }

    #[test]
    fn non_mappings_are_invalid() {
        for text in [
            "",
            "# only a comment\n",
            "just a string\n",
            "- a\n- b\n",
            "a: [1]\n",
        ] {
            assert!(read_mapping(text).is_err(), "{text:?}");
        }
    }
}
