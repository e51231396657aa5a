//! The one verdict on an appspec's lifecycle event names (agent-behaviour.md §5.10), used by
//! `validate`, `plan`, `local` and the daemon's Install alike.
//!
//! The AWS agent accepts any event name when it parses an appspec; at Install, when the
//! deployment spec carries `AllPossibleLifecycleEvents`, every appspec hook name (and every
//! hook-mapping key) must be one of them, and every custom event in that list must have a hook.
//! The daemon gets the list from the service (a deployment's custom events are in it; a typo
//! is not); `local` builds it from the eleven defaults plus `--events`; `validate` and `plan`
//! use the same set `local` would. The messages of both failures are the AWS agent's word for
//! word; each unknown name also gets its `line:column` and the nearest known name.

use super::{AppSpec, LifecycleEvent, Position};

/// One hook name that is not a lifecycle event of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEvent {
    pub name: String,
    pub position: Option<Position>,
    /// The nearest event name the deployment knows, when one is close.
    pub nearest: Option<String>,
}

impl UnknownEvent {
    /// `NAME is not a lifecycle event of this deployment; did you mean X?` (or how to run it as
    /// a custom event).
    pub fn explanation(&self) -> String {
        match &self.nearest {
            Some(near) => format!(
                "{} is not a lifecycle event of this deployment; did you mean {near}?",
                self.name
            ),
            None => format!(
                "{} is not a lifecycle event of this deployment; a custom event runs only when \
                 the deployment names it (codedeploy-local --events {})",
                self.name, self.name
            ),
        }
    }
}

/// Why Install would refuse the appspec's event names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// `<name> file contains unknown lifecycle events: [...]`.
    #[error("{appspec} file contains unknown lifecycle events: {}", super::ruby::inspect_str_array(&unknown.iter().map(|u| u.name.clone()).collect::<Vec<_>>()))]
    Unknown {
        appspec: String,
        unknown: Vec<UnknownEvent>,
    },
    /// A custom event of the deployment that the appspec has no hook for.
    #[error("You specified a lifecycle event which is not a default one and doesn't exist in your {appspec} file: {}", missing.join(","))]
    CustomMissing {
        appspec: String,
        missing: Vec<String>,
    },
}

impl EventsError {
    /// One line per problem, `appspec.yml:LINE:COL: explanation`, for the terminal and logs.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::Unknown { appspec, unknown } => unknown
                .iter()
                .map(|u| match u.position {
                    Some(p) => format!("{appspec}:{p}: {}", u.explanation()),
                    None => format!("{appspec}: {}", u.explanation()),
                })
                .collect(),
            Self::CustomMissing { appspec, missing } => missing
                .iter()
                .map(|m| format!("{appspec}: the deployment names the event {m}, but the hooks section has no {m} entry"))
                .collect(),
        }
    }
}

/// Checks the appspec's hook names (and `mapping_keys`, the events the agent maps commands
/// to) against `all_possible`, the deployment's `AllPossibleLifecycleEvents`.
pub fn check(
    appspec: &AppSpec,
    appspec_name: &str,
    all_possible: &[String],
    mapping_keys: &[String],
) -> Result<(), EventsError> {
    let mut seen = std::collections::BTreeSet::new();
    let unknown: Vec<UnknownEvent> = appspec
        .hooks
        .iter()
        .map(|(k, _)| k.clone())
        .chain(mapping_keys.iter().cloned())
        .filter(|k| seen.insert(k.clone()))
        .filter(|k| !all_possible.contains(k))
        .map(|name| UnknownEvent {
            position: appspec.hook_position(&name),
            nearest: nearest(&name, all_possible),
            name,
        })
        .collect();
    if !unknown.is_empty() {
        return Err(EventsError::Unknown {
            appspec: appspec_name.to_owned(),
            unknown,
        });
    }
    let missing: Vec<String> = all_possible
        .iter()
        .filter(|e| {
            !LifecycleEvent::DEFAULT_ORDER
                .iter()
                .any(|d| d.as_str() == e.as_str())
        })
        // The AWS agent also accepts a default hook-mapping key here; those are all defaults.
        .filter(|e| appspec.scripts(e).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(EventsError::CustomMissing {
            appspec: appspec_name.to_owned(),
            missing,
        });
    }
    Ok(())
}

/// The known name closest to `name` (case-insensitive edit distance), when it is close enough
/// to be a typo: at most a third of the name's length, and at least 1.
fn nearest(name: &str, known: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        .filter(|k| k.as_str() != "DownloadBundle" && k.as_str() != "Install")
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        LifecycleEvent::DEFAULT_ORDER
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_typo_gets_its_position_and_the_nearest_name() {
        let text = "version: 0.0\nos: linux\nhooks:\n  AfterInstal:\n    - location: a.sh\n  Bogus:\n    - location: b.sh\n";
        let spec = crate::appspec::parse(text, crate::appspec::Os::Linux)
            .expect("parses")
            .spec;
        let e = check(&spec, "appspec.yml", &defaults(), &[]).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            r#"appspec.yml file contains unknown lifecycle events: ["AfterInstal", "Bogus"]"#
        );
        let d = e.details();
        assert_eq!(
            d[0],
            "appspec.yml:4:3: AfterInstal is not a lifecycle event of this deployment; did you mean AfterInstall?"
        );
        assert!(
            d[1].starts_with("appspec.yml:6:3: Bogus is not a lifecycle event"),
            "{}",
            d[1]
        );
        let mut custom = defaults();
        custom.push("Bogus".into());
        custom.push("AfterInstal".into());
        assert!(check(&spec, "appspec.yml", &custom, &[]).is_ok());
        custom.push("Missing".into());
        assert_eq!(
            check(&spec, "appspec.yml", &custom, &[])
                .expect_err("missing")
                .to_string(),
            "You specified a lifecycle event which is not a default one and doesn't exist in your appspec.yml file: Missing"
        );
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("afterinstal", "afterinstall"), 1);
        assert_eq!(
            nearest("applicationstart", &defaults()).as_deref(),
            Some("ApplicationStart")
        );
        assert_eq!(nearest("Foo", &defaults()), None);
    }
}
