//! Self-update: the `UpdateDeploymentAgent` host command and `codedeploy-agent update`.
//!
//! What runs is the operator's choice (`update_policy`: `auto`, `pinned` with
//! `update_pinned_version`, `off`), taken from a release source the operator names
//! (`update_source`, laid out as [`source`] says). A release is verified against the
//! `SHA256SUMS` published beside it before its binary is written beside the running one,
//! fsynced and renamed over it (the old one kept as `<binary>.prev`, [`install`]). The switch is
//! a restart (`systemctl restart` under systemd, an `exec` of the new binary otherwise); a
//! watcher started from the old binary restores it when the new one does not reach its first
//! poll within `update_health_timeout_seconds` ([`state`]). The host command's result goes
//! through the daemon's tracking files, so it is reported exactly once, by whichever binary is
//! running once the outcome is known.

pub mod command;
pub mod install;
pub mod source;
pub mod state;

use std::fmt;
use std::path::PathBuf;

/// The host command this module handles.
pub const COMMAND_NAME: &str = "UpdateDeploymentAgent";

/// The name under which the update command is tracked in the tracking directory (it belongs
/// to no deployment).
pub const TRACKING_ID: &str = "UpdateDeploymentAgent";

/// A release version, `X.Y.Z` (numeric, compared as numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().trim_start_matches('v').split('.');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let v = Self(next()?, next()?, next()?);
        parts.next().is_none().then_some(v)
    }

    /// The running binary's version.
    pub fn current() -> Self {
        Self::parse(crate::VERSION).unwrap_or(Self(0, 0, 0))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `update_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdatePolicy {
    /// Install the version the source names as latest, when it is newer than this one.
    #[default]
    Auto,
    /// Install exactly this version (also an older one), nothing else.
    Pinned(Version),
    /// Never update.
    Off,
}

/// The update keys of the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    pub policy: UpdatePolicy,
    /// `update_source`: the release source's base URL (`file://`, `https://`, `http://`).
    pub source: Option<String>,
    /// `update_health_timeout_seconds`: how long the new version has to reach its first poll.
    pub health_timeout_seconds: u64,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            policy: UpdatePolicy::Auto,
            source: None,
            health_timeout_seconds: 120,
        }
    }
}

/// The configuration keys [`apply_key`] reads.
pub const KEYS: &[&str] = &[
    "update_policy",
    "update_pinned_version",
    "update_source",
    "update_health_timeout_seconds",
];

/// Applies one configuration key (its value as text; `None` for an empty value). `Err` is the
/// message for the key. `update_policy` takes `auto`, `off`, `pinned` (with
/// `update_pinned_version`) or the short form `pinned X.Y.Z` / `pinned:X.Y.Z`.
pub fn apply_key(
    settings: &mut UpdateSettings,
    pinned_version: &mut Option<String>,
    key: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    match key {
        "update_policy" => {
            let text = value.unwrap_or("auto").to_ascii_lowercase();
            settings.policy = match text.as_str() {
                "auto" => UpdatePolicy::Auto,
                // YAML 1.1 readers (the Ruby agent's) read a bare `off` as false.
                "off" | "false" => UpdatePolicy::Off,
                "pinned" => UpdatePolicy::Pinned(Version(0, 0, 0)),
                other => match other
                    .strip_prefix("pinned")
                    .map(|v| v.trim_start_matches([':', ' ', '=']))
                    .and_then(Version::parse)
                {
                    Some(v) => {
                        *pinned_version = Some(v.to_string());
                        UpdatePolicy::Pinned(v)
                    }
                    None => {
                        return Err(format!(
                            "expected auto, off, or pinned (with update_pinned_version: X.Y.Z), \
                             found {other}"
                        ));
                    }
                },
            };
        }
        "update_pinned_version" => *pinned_version = value.map(str::to_owned),
        "update_source" => {
            if let Some(url) = value {
                source::check_base_url(url)?;
            }
            settings.source = value.map(|v| v.trim_end_matches('/').to_owned());
        }
        "update_health_timeout_seconds" => {
            let seconds: u64 = value
                .unwrap_or("120")
                .parse()
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| {
                    format!(
                        "expected a whole number of seconds from 1 to 3600, found {}",
                        value.unwrap_or_default()
                    )
                })?;
            settings.health_timeout_seconds = seconds;
        }
        _ => {}
    }
    Ok(())
}

/// Completes the settings once every key is read: `pinned` needs its version.
pub fn finish_settings(
    settings: &mut UpdateSettings,
    pinned_version: Option<&str>,
) -> Result<(), (&'static str, String)> {
    if let UpdatePolicy::Pinned(v) = &mut settings.policy
        && *v == Version(0, 0, 0)
    {
        let text = pinned_version.ok_or((
            "update_pinned_version",
            "is required with update_policy: pinned (for example update_pinned_version: 1.2.3)"
                .to_owned(),
        ))?;
        *v = Version::parse(text).ok_or((
            "update_pinned_version",
            format!("expected a version X.Y.Z, found {text}"),
        ))?;
    } else if let Some(text) = pinned_version
        && Version::parse(text).is_none()
    {
        return Err((
            "update_pinned_version",
            format!("expected a version X.Y.Z, found {text}"),
        ));
    }
    Ok(())
}

/// Why an update does not happen, or failed. The messages go to the service (the command's
/// payload) and to the operator (`codedeploy-agent update`).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "update_policy is off in {config}: this agent does not update itself; set update_policy \
         to auto or pinned (with update_pinned_version) to allow it"
    )]
    Off { config: String },
    #[error(
        "no update_source in {config}: name the release source (a file://, https:// or http:// \
         base URL laid out as docs/operations.md \"Self-update\" describes)"
    )]
    NoSource { config: String },
    #[error("cannot read {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} does not name a version X.Y.Z: {text:?}")]
    BadLatest { url: String, text: String },
    #[error("{sums} lists no checksum for {file}")]
    NoChecksum { sums: String, file: String },
    #[error(
        "checksum mismatch for {file}: SHA256SUMS says {expected}, the download is {actual}; \
         nothing was installed, the running binary is unchanged"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file} has no bin/codedeploy-agent entry")]
    NoBinary { file: String },
    #[error("the new binary {path} does not run: {message}; nothing was installed")]
    BadBinary { path: PathBuf, message: String },
    #[error("cannot install {path}: {source}")]
    Install {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot restart into the new binary {path}: {message}")]
    Restart { path: PathBuf, message: String },
}

/// What an update run decided to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nothing to do: the running version is what the policy asks for.
    Current { version: Version, why: String },
    /// Install this version.
    Install(Version),
}

/// The version to install: `latest` is what the source names as latest (read only for `auto`).
pub fn decide(policy: UpdatePolicy, current: Version, latest: Option<Version>) -> Target {
    match (policy, latest) {
        (UpdatePolicy::Pinned(v), _) if v == current => Target::Current {
            version: v,
            why: format!("the agent already runs the pinned version {v}"),
        },
        (UpdatePolicy::Pinned(v), _) => Target::Install(v),
        (_, Some(l)) if l > current => Target::Install(l),
        (_, l) => Target::Current {
            version: current,
            why: match l {
                Some(l) => format!(
                    "the agent runs {current}; the latest release at the source is {l}: nothing newer"
                ),
                None => format!("the agent runs {current}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lines: &[(&str, &str)]) -> Result<UpdateSettings, String> {
        let mut s = UpdateSettings::default();
        let mut pin = None;
        for (k, v) in lines {
            apply_key(&mut s, &mut pin, k, Some(v))?;
        }
        finish_settings(&mut s, pin.as_deref()).map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(s)
    }

    #[test]
    fn policies_parse_in_both_spellings() {
        assert_eq!(settings(&[]).expect("default").policy, UpdatePolicy::Auto);
        assert_eq!(
            settings(&[("update_policy", "off")]).expect("off").policy,
            UpdatePolicy::Off
        );
        assert_eq!(
            settings(&[
                ("update_policy", "pinned"),
                ("update_pinned_version", "1.2.3")
            ])
            .expect("pinned")
            .policy,
            UpdatePolicy::Pinned(Version(1, 2, 3))
        );
        assert_eq!(
            settings(&[("update_policy", "pinned: 2.0.1")])
                .expect("short")
                .policy,
            UpdatePolicy::Pinned(Version(2, 0, 1))
        );
        assert!(
            settings(&[("update_policy", "pinned")])
                .expect_err("no version")
                .starts_with("update_pinned_version: is required")
        );
        assert!(settings(&[("update_policy", "sometimes")]).is_err());
        assert!(settings(&[("update_source", "ftp://x")]).is_err());
        assert!(settings(&[("update_health_timeout_seconds", "0")]).is_err());
    }

    #[test]
    fn decisions_follow_the_policy() {
        let cur = Version(1, 0, 0);
        assert_eq!(
            decide(UpdatePolicy::Auto, cur, Some(Version(1, 1, 0))),
            Target::Install(Version(1, 1, 0))
        );
        assert!(matches!(
            decide(UpdatePolicy::Auto, cur, Some(Version(0, 9, 0))),
            Target::Current { .. }
        ));
        assert_eq!(
            decide(UpdatePolicy::Pinned(Version(0, 9, 0)), cur, None),
            Target::Install(Version(0, 9, 0))
        );
        assert!(matches!(
            decide(UpdatePolicy::Pinned(cur), cur, Some(Version(2, 0, 0))),
            Target::Current { .. }
        ));
        assert!(Version(1, 10, 0) > Version(1, 9, 9));
        assert_eq!(Version::parse("v1.2.3"), Some(Version(1, 2, 3)));
        assert_eq!(Version::parse("1.2"), None);
    }
}
