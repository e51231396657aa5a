//! Which agent artifact an image bakes, and how that choice travels with the image.
//!
//! CodeBuild publishes every push's agent under its commit
//! (`s3://<bucket>/<prefix>/agent/<commit>/codedeploy-agent-<version>-<arch>.tar.gz`, with
//! `SHA256SUMS` beside it), then invokes `start-qat-image` with a [`ReleaseEvent`]. That function
//! creates a new QAT recipe version whose agent component carries `Commit`, `Version`, `Arch`
//! and `Sha256` as parameters, so each image records exactly which artifact it baked
//! (recipes are immutable: <https://docs.aws.amazon.com/imagebuilder/latest/userguide/manage-recipes.html>).
//! The image-ready function reads the commit back from the image's recipe and starts the
//! CodePipeline at that commit; the production image is built on top of the QAT image with
//! the same component parameters. No pure function here does I/O.

use serde::Deserialize;

/// What the buildspec's publish step sends to `start-qat-image` (Lambda Invoke, async).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseEvent {
    /// The full commit id the artifact was built from.
    pub commit: String,
    /// The agent's Cargo version (part of the tarball's name).
    pub version: String,
    /// x86_64 or aarch64.
    pub arch: String,
    /// SHA-256 of the tarball, from the SHA256SUMS published beside it.
    pub sha256: String,
    /// Semantic version for the new recipe: `1.0.<CodeBuild build number>`.
    pub recipe_version: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Image Builder recipe versions are `major.minor.patch`, numbers only.
pub fn is_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Every field must be what the component and recipe accept; the message names the field.
pub fn validate_release(event: &ReleaseEvent) -> Result<(), String> {
    if !is_hex(&event.commit, 40) {
        return Err(format!(
            "commit must be a full 40-character commit id, got {:?}",
            event.commit
        ));
    }
    if event.version.is_empty()
        || !event
            .version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
    {
        return Err(format!(
            "version must be the agent's Cargo version, got {:?}",
            event.version
        ));
    }
    if event.arch != "x86_64" && event.arch != "aarch64" {
        return Err(format!(
            "arch must be x86_64 or aarch64, got {:?}",
            event.arch
        ));
    }
    if !is_hex(&event.sha256, 64) {
        return Err(format!(
            "sha256 must be 64 hex characters, got {:?}",
            event.sha256
        ));
    }
    if !is_semver(&event.recipe_version) {
        return Err(format!(
            "recipeVersion must be major.minor.patch, got {:?}",
            event.recipe_version
        ));
    }
    Ok(())
}

/// The agent component's parameters this release sets (the bucket and prefix stay as the
/// recipe template in image-builder.yml has them).
pub fn release_parameters(event: &ReleaseEvent) -> Vec<(String, String)> {
    vec![
        ("Commit".into(), event.commit.clone()),
        ("Version".into(), event.version.clone()),
        ("Arch".into(), event.arch.clone()),
        ("Sha256".into(), event.sha256.clone()),
    ]
}

/// `existing` with every name in `overrides` replaced (or added), order kept.
pub fn merge_parameters(
    existing: &[(String, String)],
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = existing
        .iter()
        .map(|(name, value)| {
            let value = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| value.clone(), |(_, v)| v.clone());
            (name.clone(), value)
        })
        .collect();
    for (name, value) in overrides {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// The agent component is the one with a `Sha256` parameter.
pub fn is_agent_component(parameters: &[(String, String)]) -> bool {
    parameters.iter().any(|(n, _)| n == "Sha256")
}

/// The commit an image's agent component was baked from.
pub fn commit_of(parameters: &[(String, String)]) -> Option<&str> {
    parameters
        .iter()
        .find(|(n, _)| n == "Commit")
        .map(|(_, v)| v.as_str())
        .filter(|v| is_hex(v, 40))
}

/// `start-prod-image`'s UserParameters, filled in by CodePipeline from the QAT execution's
/// variables: `{"commit":"#{SourceVariables.CommitId}","qatImage":"#{variables.ImageArn}"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PromoteParameters {
    pub commit: String,
    pub qat_image: String,
}

pub fn promote_parameters(user_parameters: Option<&str>) -> Result<PromoteParameters, String> {
    const SHAPE: &str =
        r#"UserParameters must be {"commit":"<commit id>","qatImage":"<Image Builder image ARN>"}"#;
    let raw = user_parameters.ok_or_else(|| format!("{SHAPE}; it is missing"))?;
    let params: PromoteParameters =
        serde_json::from_str(raw).map_err(|e| format!("{SHAPE}; got {raw:?} ({e})"))?;
    if !is_hex(&params.commit, 40) {
        return Err(format!(
            "{SHAPE}; commit {:?} is not a full commit id",
            params.commit
        ));
    }
    if !params.qat_image.starts_with("arn:") || !params.qat_image.contains(":image/") {
        return Err(format!(
            "{SHAPE}; qatImage {:?} is not an image ARN (was the execution started by start-qat-pipeline?)",
            params.qat_image
        ));
    }
    Ok(params)
}

/// Production may only bake on the QAT image that carries the approved commit.
pub fn check_promotion(
    approved_commit: &str,
    qat_image_commit: Option<&str>,
) -> Result<(), String> {
    match qat_image_commit {
        Some(c) if c.eq_ignore_ascii_case(approved_commit) => Ok(()),
        Some(c) => Err(format!(
            "the QAT image was baked from commit {c}, but this execution approved {approved_commit}; refusing to promote"
        )),
        None => Err(format!(
            "the QAT image's recipe records no commit (it was not built by start-qat-image); refusing to promote {approved_commit}"
        )),
    }
}

/// `arn:...:image-recipe/<name>/<old version>` -> the same recipe at `version`.
pub fn recipe_arn_at(recipe_arn: &str, version: &str) -> String {
    match recipe_arn.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{version}"),
        None => recipe_arn.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> ReleaseEvent {
        ReleaseEvent {
            commit: "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6".into(),
            version: "0.1.0".into(),
            arch: "x86_64".into(),
            sha256: "ab".repeat(32),
            recipe_version: "1.0.42".into(),
        }
    }

    #[test]
    fn a_release_from_the_buildspec_is_accepted() {
        let json = r#"{"commit":"c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6","version":"0.1.0","arch":"x86_64","sha256":"abababababababababababababababababababababababababababababababab","recipeVersion":"1.0.42"}"#;
        let event: ReleaseEvent = serde_json::from_str(json).expect("parse");
        assert_eq!(event, release());
        assert_eq!(validate_release(&event), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut e = release();
        e.commit = "HEAD".into();
        assert!(validate_release(&e).unwrap_err().starts_with("commit"));
        let mut e = release();
        e.recipe_version = "1.0".into();
        assert!(
            validate_release(&e)
                .unwrap_err()
                .starts_with("recipeVersion")
        );
        let mut e = release();
        e.arch = "arm64".into();
        assert!(validate_release(&e).unwrap_err().starts_with("arch"));
    }

    #[test]
    fn parameters_are_overridden_in_place_and_bucket_kept() {
        let template = vec![
            ("Version".to_owned(), "0.0.0".to_owned()),
            ("ArtifactBucket".to_owned(), "b".to_owned()),
            ("Sha256".to_owned(), "0".repeat(64)),
        ];
        let merged = merge_parameters(&template, &release_parameters(&release()));
        assert_eq!(merged[0], ("Version".into(), "0.1.0".into()));
        assert_eq!(merged[1], ("ArtifactBucket".into(), "b".into()));
        assert_eq!(merged[2], ("Sha256".into(), "ab".repeat(32)));
        assert!(merged.contains(&("Commit".into(), release().commit)));
        assert_eq!(commit_of(&merged), Some(release().commit.as_str()));
        assert!(is_agent_component(&merged));
    }

    #[test]
    fn promotion_needs_the_approved_commit_on_the_qat_image() {
        let p = promote_parameters(Some(
            r#"{"commit":"c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6","qatImage":"arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat/1.0.42/1"}"#,
        ))
        .expect("parse");
        assert_eq!(check_promotion(&p.commit, Some(&p.commit)), Ok(()));
        assert!(
            check_promotion(&p.commit, Some("a2bc1d2e0a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6"))
                .unwrap_err()
                .contains("refusing to promote")
        );
        assert!(check_promotion(&p.commit, None).is_err());
        // An unresolved variable (execution not started by start-qat-pipeline) is refused.
        assert!(
            promote_parameters(Some(
                r#"{"commit":"c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6","qatImage":"none"}"#
            ))
            .is_err()
        );
    }

    #[test]
    fn recipe_arn_at_replaces_the_version() {
        assert_eq!(
            recipe_arn_at(
                "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-qat/1.0.0",
                "1.0.42"
            ),
            "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-qat/1.0.42"
        );
    }
}
