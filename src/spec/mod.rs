//! The deployment specification (agent-behaviour.md §3): the envelope the service (or local
//! mode) hands us, and the fields every command reads.
//!
//! `TEXT/JSON` envelopes are accepted only when the caller allows them (local mode).
//! `PKCS7/JSON` envelopes carry the JSON as signed content; `pkcs7` verifies them.

pub mod pkcs7;

use serde_json::{Map, Value};

/// Why a deployment specification was refused. Messages are the AWS agent's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
}

impl SpecError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    S3 {
        bucket: String,
        key: String,
        bundle_type: String,
        version: Option<String>,
        etag: Option<String>,
    },
    GitHub {
        account: String,
        repository: String,
        commit_id: String,
        /// `zip` or `tar`; checked at download time (§3.4).
        bundle_type: Option<String>,
    },
    /// `Local File`: an archive on this machine.
    LocalFile {
        location: String,
        bundle_type: String,
    },
    /// `Local Directory`: a bundle directory on this machine.
    LocalDirectory {
        location: String,
        bundle_type: String,
    },
}

/// The parsed fields of a deployment specification (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub deployment_id: String,
    pub deployment_group_id: String,
    pub deployment_group_name: String,
    pub application_name: String,
    /// Default `user`; `codeDeployRollback` changes which revision hooks use (§2.2).
    pub deployment_creator: String,
    /// Default `IN_PLACE`.
    pub deployment_type: String,
    /// Default `appspec.yml`.
    pub app_spec_filename: String,
    pub revision: Revision,
    /// Upcased; default `DISALLOW`. Any value is accepted here; Install rejects bad ones.
    pub file_exists_behavior: String,
    pub all_possible_lifecycle_events: Option<Vec<String>>,
    pub github_access_token: Option<String>,
    /// v2's `ReuseArchiveFromDeploymentId`, normalised like `DeploymentId`.
    pub reuse_archive_from_deployment_id: Option<String>,
}

impl DeploymentSpec {
    /// True for a blue/green deployment created by an automatic rollback (§2.2).
    pub fn is_blue_green_rollback(&self) -> bool {
        self.deployment_type == "BLUE_GREEN" && self.deployment_creator == "codeDeployRollback"
    }

    /// Parses the JSON document of a spec, applying the checks of §3.3 in the AWS order.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            SpecError::new(format!(
                "The deployment specification is not valid JSON: {e}"
            ))
        })?;
        let Value::Object(data) = value else {
            return Err(SpecError::new(
                "The deployment specification is not a JSON object",
            ));
        };
        Self::from_map(&data)
    }

    fn from_map(data: &Map<String, Value>) -> Result<Self, SpecError> {
        let deployment_id = required(data, "DeploymentId", "Deployment Spec has no DeploymentId")?;
        let deployment_id = normalise_deployment_id(&deployment_id);
        check_dir_name("DeploymentId", &deployment_id)?;
        let deployment_group_id = required(
            data,
            "DeploymentGroupId",
            "Deployment Spec has no DeploymentGroupId",
        )?;
        check_dir_name("DeploymentGroupId", &deployment_group_id)?;
        let deployment_group_name = required(
            data,
            "DeploymentGroupName",
            "Deployment Spec has no DeploymentGroupName",
        )?;
        let application_name = required(
            data,
            "ApplicationName",
            "Deployment Spec has no ApplicationName",
        )?;
        let deployment_creator = optional(data, "DeploymentCreator")?.unwrap_or("user".into());
        let deployment_type = optional(data, "DeploymentType")?.unwrap_or("IN_PLACE".into());
        let app_spec_filename =
            optional(data, "AppSpecFilename")?.unwrap_or_else(|| "appspec.yml".into());

        let revision = match data.get("Revision") {
            None | Some(Value::Null) => return Err(SpecError::new("Must specify a revison")),
            Some(revision) => parse_revision(revision)?,
        };

        let file_exists_behavior = data
            .get("AgentActionOverrides")
            .and_then(|v| v.get("AgentOverrides"))
            .and_then(|v| v.get("FileExistsBehavior"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_uppercase)
            .unwrap_or_else(|| "DISALLOW".into());

        let all_possible_lifecycle_events = match data.get("AllPossibleLifecycleEvents") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            SpecError::new("AllPossibleLifecycleEvents must be a list of strings")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(SpecError::new(
                    "AllPossibleLifecycleEvents must be a list of strings",
                ));
            }
        };

        let github_access_token = optional(data, "GitHubAccessToken")?;
        let reuse_archive_from_deployment_id =
            optional(data, "ReuseArchiveFromDeploymentId")?.map(|id| normalise_deployment_id(&id));
        if let Some(id) = &reuse_archive_from_deployment_id {
            check_dir_name("ReuseArchiveFromDeploymentId", id)?;
        }

        Ok(Self {
            deployment_id,
            deployment_group_id,
            deployment_group_name,
            application_name,
            deployment_creator,
            deployment_type,
            app_spec_filename,
            revision,
            file_exists_behavior,
            all_possible_lifecycle_events,
            github_access_token,
            reuse_archive_from_deployment_id,
        })
    }
}

/// Keys whose values are secrets wherever they appear in a spec.
const SECRET_KEYS: [&str; 2] = ["GitHubAccessToken", "OAuthToken"];

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if SECRET_KEYS.contains(&key.as_str()) && !v.is_null() {
                    *v = Value::String("REDACTED".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The JSON document with every GitHub token (`GitHubAccessToken`, and `OAuthToken` inside the
/// revision) replaced by `REDACTED`, for logs.
pub fn redacted_json(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(mut value) => {
            redact(&mut value);
            value.to_string()
        }
        Err(_) => "<unparseable deployment specification>".into(),
    }
}

/// Parses an envelope: `format` and `payload` as the service sends them.
/// `allow_text_json` is true only in local mode.
pub fn parse_envelope(
    format: Option<&str>,
    payload: &str,
    allow_text_json: bool,
) -> Result<DeploymentSpec, SpecError> {
    match format {
        Some("PKCS7/JSON") => {
            let content =
                pkcs7::verify_signed_content(payload).map_err(|e| SpecError::new(e.to_string()))?;
            let text = String::from_utf8(content).map_err(|e| {
                SpecError::new(format!(
                    "The signed deployment specification is not valid UTF-8: {}",
                    e.utf8_error()
                ))
            })?;
            DeploymentSpec::from_json(&text)
        }
        Some("TEXT/JSON") if allow_text_json => DeploymentSpec::from_json(payload),
        other => Err(SpecError::new(format!(
            "Unsupported DeploymentSpecification format: {}",
            other.unwrap_or("")
        ))),
    }
}

/// `arn:aws:codedeploy:us-east-1:1234:deployment/d-ABC` -> `d-ABC`; anything else unchanged.
pub fn normalise_deployment_id(id: &str) -> String {
    if !id.starts_with("arn:") {
        return id.to_owned();
    }
    id.splitn(6, ':')
        .nth(5)
        .and_then(|resource| resource.split_once("deployment/").map(|(_, id)| id))
        .unwrap_or(id)
        .to_owned()
}

/// Ids become directory names under the deployment root: nothing may escape it.
fn check_dir_name(field: &str, value: &str) -> Result<(), SpecError> {
    if value == "." || value == ".." || value.contains('/') || value.contains('\0') {
        return Err(SpecError::new(format!(
            "Deployment Spec {field} ({value}) cannot be used as a directory name: it must not \
             be '.' or '..' or contain '/'"
        )));
    }
    Ok(())
}

/// Ruby's "set": present, not null, not empty.
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn as_text(field: &str, v: &Value) -> Result<String, SpecError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(SpecError::new(format!(
            "Deployment Spec field {field} must be a string"
        ))),
    }
}

fn required(data: &Map<String, Value>, field: &str, missing: &str) -> Result<String, SpecError> {
    let v = data.get(field);
    if !is_set(v) {
        return Err(SpecError::new(missing));
    }
    as_text(field, v.expect("is_set implies present"))
}

fn optional(data: &Map<String, Value>, field: &str) -> Result<Option<String>, SpecError> {
    let v = data.get(field);
    if !is_set(v) {
        return Ok(None);
    }
    as_text(field, v.expect("is_set implies present")).map(Some)
}

fn parse_revision(revision: &Value) -> Result<Revision, SpecError> {
    let no_source = || SpecError::new("Must specify a revision source");
    let Value::Object(rev) = revision else {
        return Err(no_source());
    };
    if !is_set(rev.get("RevisionType")) {
        return Err(no_source());
    }
    let kind = as_text("RevisionType", &rev["RevisionType"])?;
    let sub = |name: &str| rev.get(name).and_then(Value::as_object);
    match kind.as_str() {
        "S3" => {
            let msg = "S3Revision in Deployment Spec must specify Bucket, Key and BundleType";
            let s3 = sub("S3Revision").ok_or_else(|| SpecError::new(msg))?;
            let has = |k: &str| s3.get(k).is_some_and(|v| !v.is_null());
            if !(has("Bucket") && has("Key") && has("BundleType")) {
                return Err(SpecError::new(msg));
            }
            let bundle_type = as_text("BundleType", &s3["BundleType"])?;
            if !["tar", "tgz", "zip"].contains(&bundle_type.as_str()) {
                return Err(SpecError::new(
                    "BundleType in S3Revision must be tar, tgz or zip",
                ));
            }
            Ok(Revision::S3 {
                bucket: as_text("Bucket", &s3["Bucket"])?,
                key: as_text("Key", &s3["Key"])?,
                bundle_type,
                version: optional(s3, "Version")?,
                etag: optional(s3, "ETag")?,
            })
        }
        "GitHub" => {
            let msg = "GitHubRevision in Deployment Spec must specify Account, Repository and \
                       CommitId";
            let gh = sub("GitHubRevision").ok_or_else(|| SpecError::new(msg))?;
            let has = |k: &str| gh.get(k).is_some_and(|v| !v.is_null());
            let anonymous_false = gh
                .get("Anonymous")
                .is_some_and(|v| v == &Value::Bool(false));
            if !(has("Account") && has("Repository") && has("CommitId"))
                || (anonymous_false && !has("OAuthToken"))
            {
                return Err(SpecError::new(msg));
            }
            Ok(Revision::GitHub {
                account: as_text("Account", &gh["Account"])?,
                repository: as_text("Repository", &gh["Repository"])?,
                commit_id: as_text("CommitId", &gh["CommitId"])?,
                bundle_type: optional(gh, "BundleType")?,
            })
        }
        "Local File" | "Local Directory" => {
            let msg = "LocalRevision in Deployment Spec must specify Location and BundleType";
            let local = sub("LocalRevision").ok_or_else(|| SpecError::new(msg))?;
            let has = |k: &str| local.get(k).is_some_and(|v| !v.is_null());
            if !(has("Location") && has("BundleType")) {
                return Err(SpecError::new(msg));
            }
            let location = as_text("Location", &local["Location"])?;
            let bundle_type = as_text("BundleType", &local["BundleType"])?;
            if !["tar", "tgz", "zip", "directory"].contains(&bundle_type.as_str()) {
                return Err(SpecError::new(
                    "BundleType in LocalRevision must be tar, tgz, zip, or directory",
                ));
            }
            if kind == "Local File" {
                Ok(Revision::LocalFile {
                    location,
                    bundle_type,
                })
            } else {
                Ok(Revision::LocalDirectory {
                    location,
                    bundle_type,
                })
            }
        }
        _ => Err(SpecError::new(
            "Exactly one of S3Revision, GitHubRevision, or LocalRevision must be specified",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "DeploymentId": "d-ABC",
            "DeploymentGroupId": "dg-1",
            "DeploymentGroupName": "group",
            "ApplicationName": "app",
            "Revision": {
                "RevisionType": "S3",
                "S3Revision": {"Bucket": "b", "Key": "k.zip", "BundleType": "zip"}
            }
        })
    }

    fn parse(v: &Value) -> Result<DeploymentSpec, SpecError> {
        DeploymentSpec::from_json(&v.to_string())
    }

    fn err(v: &Value) -> String {
        parse(v).expect_err("must fail").message
    }

    #[test]
    fn defaults() {
        let spec = parse(&base()).expect("valid");
        assert_eq!(spec.deployment_creator, "user");
        assert_eq!(spec.deployment_type, "IN_PLACE");
        assert_eq!(spec.app_spec_filename, "appspec.yml");
        assert_eq!(spec.file_exists_behavior, "DISALLOW");
        assert_eq!(spec.all_possible_lifecycle_events, None);
        assert!(!spec.is_blue_green_rollback());
    }

    #[test]
    fn required_fields_in_aws_order() {
        for (field, message) in [
            ("DeploymentId", "Deployment Spec has no DeploymentId"),
            (
                "DeploymentGroupId",
                "Deployment Spec has no DeploymentGroupId",
            ),
            (
                "DeploymentGroupName",
                "Deployment Spec has no DeploymentGroupName",
            ),
            ("ApplicationName", "Deployment Spec has no ApplicationName"),
            ("Revision", "Must specify a revison"),
        ] {
            let mut v = base();
            v.as_object_mut().expect("object").remove(field);
            assert_eq!(err(&v), message, "{field}");
            let mut v = base();
            v[field] = Value::Null;
            assert_eq!(err(&v), message, "{field} null");
        }
        let mut v = base();
        v["DeploymentGroupName"] = json!("");
        assert_eq!(err(&v), "Deployment Spec has no DeploymentGroupName");
    }

    #[test]
    fn arn_deployment_id_is_normalised() {
        let mut v = base();
        v["DeploymentId"] = json!("arn:aws:codedeploy:us-east-1:1:deployment/d-XYZ");
        assert_eq!(parse(&v).expect("valid").deployment_id, "d-XYZ");
        v["ReuseArchiveFromDeploymentId"] =
            json!("arn:aws:codedeploy:us-east-1:1:deployment/d-OLD");
        assert_eq!(
            parse(&v)
                .expect("valid")
                .reuse_archive_from_deployment_id
                .as_deref(),
            Some("d-OLD")
        );
    }

    #[test]
    fn ids_cannot_escape_the_root() {
        for bad in ["..", "a/b", "."] {
            let mut v = base();
            v["DeploymentGroupId"] = json!(bad);
            assert!(
                err(&v).contains("cannot be used as a directory name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn revision_messages() {
        let mut v = base();
        v["Revision"] = json!("");
        assert_eq!(err(&v), "Must specify a revision source");
        v["Revision"] = json!({"RevisionType": "Foo"});
        assert_eq!(
            err(&v),
            "Exactly one of S3Revision, GitHubRevision, or LocalRevision must be specified"
        );
        v["Revision"] = json!({"RevisionType": "S3", "S3Revision": {"Bucket": "b", "Key": "k"}});
        assert_eq!(
            err(&v),
            "S3Revision in Deployment Spec must specify Bucket, Key and BundleType"
        );
        v["Revision"] = json!({"RevisionType": "S3", "S3Revision": {"Bucket": "b", "Key": "k", "BundleType": "rar"}});
        assert_eq!(err(&v), "BundleType in S3Revision must be tar, tgz or zip");
        v["Revision"] = json!({"RevisionType": "GitHub", "GitHubRevision": {"Account": "a", "Repository": "r"}});
        assert_eq!(
            err(&v),
            "GitHubRevision in Deployment Spec must specify Account, Repository and CommitId"
        );
        v["Revision"] = json!({"RevisionType": "GitHub", "GitHubRevision": {"Account": "a", "Repository": "r", "CommitId": "c", "Anonymous": false}});
        assert_eq!(
            err(&v),
            "GitHubRevision in Deployment Spec must specify Account, Repository and CommitId"
        );
        v["Revision"] = json!({"RevisionType": "Local File", "LocalRevision": {"Location": "/x"}});
        assert_eq!(
            err(&v),
            "LocalRevision in Deployment Spec must specify Location and BundleType"
        );
        v["Revision"] = json!({"RevisionType": "Local Directory", "LocalRevision": {"Location": "/x", "BundleType": "rar"}});
        assert_eq!(
            err(&v),
            "BundleType in LocalRevision must be tar, tgz, zip, or directory"
        );
    }

    #[test]
    fn file_exists_behavior_is_upcased() {
        let mut v = base();
        v["AgentActionOverrides"] = json!({"AgentOverrides": {"FileExistsBehavior": "overwrite"}});
        assert_eq!(parse(&v).expect("valid").file_exists_behavior, "OVERWRITE");
    }

    #[test]
    fn envelope_formats() {
        let payload = base().to_string();
        assert!(parse_envelope(Some("TEXT/JSON"), &payload, true).is_ok());
        assert_eq!(
            parse_envelope(Some("TEXT/JSON"), &payload, false)
                .expect_err("daemon")
                .message,
            "Unsupported DeploymentSpecification format: TEXT/JSON"
        );
        assert_eq!(
            parse_envelope(Some("XML"), &payload, true)
                .expect_err("xml")
                .message,
            "Unsupported DeploymentSpecification format: XML"
        );
        assert_eq!(
            parse_envelope(None, &payload, true)
                .expect_err("nil")
                .message,
            "Unsupported DeploymentSpecification format: "
        );
    }

    #[test]
    fn token_is_redacted() {
        let mut v = base();
        v["Revision"] = json!({"RevisionType": "GitHub", "GitHubRevision": {"Account": "a", "Repository": "r", "CommitId": "c", "OAuthToken": "gho_secret"}});
        let out = redacted_json(&v.to_string());
        assert!(!out.contains("gho_secret"), "{out}");
        v["GitHubAccessToken"] = json!("ghp_secret");
        let out = redacted_json(&v.to_string());
        assert!(!out.contains("ghp_secret"));
        assert!(out.contains("REDACTED"));
    }
}
