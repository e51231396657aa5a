//! Pure decisions: what each function does with the event it got. No I/O here.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::events::{CodeCommitEvent, ImageMessage};

/// What to do with a CodeCommit push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Start the image pipeline; `client_token` makes a redelivered event start it only once.
    Start {
        commit_id: String,
        client_token: String,
    },
    Ignore(String),
}

/// A push (created or updated) of `branch` starts the image pipeline; anything else is ignored.
pub fn on_push(event: &CodeCommitEvent, branch: &str) -> PushDecision {
    let d = &event.detail;
    if event.source != "aws.codecommit" || event.detail_type != "CodeCommit Repository State Change"
    {
        return PushDecision::Ignore(format!(
            "not a CodeCommit state change ({} / {})",
            event.source, event.detail_type
        ));
    }
    if d.reference_type != "branch" || d.reference_name != branch {
        return PushDecision::Ignore(format!(
            "{} {} in {} is not the release branch {branch}",
            d.reference_type, d.reference_name, d.repository_name
        ));
    }
    if d.event != "referenceCreated" && d.event != "referenceUpdated" {
        return PushDecision::Ignore(format!("{} of {branch} does not build an image", d.event));
    }
    match &d.commit_id {
        Some(commit) if !commit.is_empty() => PushDecision::Start {
            commit_id: commit.clone(),
            // Image Builder's clientToken is 1 to 36 characters.
            client_token: commit.chars().take(36).collect(),
        },
        _ => PushDecision::Ignore(format!("{} of {branch} carries no commit id", d.event)),
    }
}

/// What to do with an SNS message from Image Builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDecision {
    Start {
        image_arn: String,
        ami: Option<String>,
        /// CodePipeline's clientRequestToken: 1 to 128 of `[A-Za-z0-9-]`, derived from the image.
        client_request_token: String,
    },
    Ignore(String),
}

/// An AVAILABLE image from `expected_pipeline_arn` starts the code pipeline; failed images,
/// images of other pipelines and messages that are not images are ignored (with the reason).
pub fn on_image_message(message: &str, expected_pipeline_arn: &str) -> ImageDecision {
    let image: ImageMessage = match serde_json::from_str(message) {
        Ok(image) => image,
        Err(e) => {
            return ImageDecision::Ignore(format!("not an Image Builder image message: {e}"));
        }
    };
    if image.source_pipeline_arn.as_deref() != Some(expected_pipeline_arn) {
        return ImageDecision::Ignore(format!(
            "image {} comes from pipeline {}, not {expected_pipeline_arn}",
            image.arn,
            image.source_pipeline_arn.as_deref().unwrap_or("(none)")
        ));
    }
    if image.state.status != "AVAILABLE" {
        return ImageDecision::Ignore(format!(
            "image {} is {}{}",
            image.arn,
            image.state.status,
            image
                .state
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    let token: String = image
        .arn
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let client_request_token = token[token.len().saturating_sub(128)..].to_owned();
    ImageDecision::Start {
        ami: image
            .output_resources
            .and_then(|o| o.amis.into_iter().next())
            .map(|a| format!("{} ({})", a.image, a.region)),
        image_arn: image.arn,
        client_request_token,
    }
}

/// The Invoke action's UserParameters for the distinct-approvers check.
#[derive(Debug, Clone, Deserialize)]
pub struct ApproverParameters {
    pub approvals: Vec<String>,
}

/// Parses `{"approvals":["QCApproval","PMOApproval"]}`: at least two distinct action names.
pub fn approver_parameters(user_parameters: Option<&str>) -> Result<Vec<String>, String> {
    const SHAPE: &str =
        r#"UserParameters must be {"approvals":["<approval action>","<approval action>",...]}"#;
    let raw = user_parameters.ok_or_else(|| format!("{SHAPE}; it is missing"))?;
    let params: ApproverParameters =
        serde_json::from_str(raw).map_err(|e| format!("{SHAPE}; got {raw:?} ({e})"))?;
    let mut names = params.approvals.clone();
    names.sort();
    names.dedup();
    if names.len() < 2 || names.len() != params.approvals.len() {
        return Err(format!(
            "{SHAPE} with at least two different action names; got {:?}",
            params.approvals
        ));
    }
    Ok(params.approvals)
}

/// One action execution of the current pipeline execution, as ListActionExecutions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub action_name: String,
    /// InProgress, Succeeded, Failed or Abandoned.
    pub status: String,
    /// The approver's ARN for a manual approval.
    pub updated_by: Option<String>,
    /// Orders repeated executions of one action (a retried stage): the latest counts.
    pub last_update_millis: i64,
}

/// Why the approvals do not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalProblem {
    Missing {
        action: String,
    },
    NotApproved {
        action: String,
        status: String,
    },
    NoApprover {
        action: String,
    },
    SameApprover {
        actions: Vec<String>,
        approver: String,
    },
}

impl fmt::Display for ApprovalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { action } => write!(
                f,
                "approval {action} has no result in this pipeline execution"
            ),
            Self::NotApproved { action, status } => {
                write!(f, "approval {action} is {status}, not Succeeded")
            }
            Self::NoApprover { action } => write!(
                f,
                "approval {action} succeeded but CodePipeline recorded no approver"
            ),
            Self::SameApprover { actions, approver } => write!(
                f,
                "{} were all approved by {approver}; each must be approved by a different person",
                actions.join(" and ")
            ),
        }
    }
}

/// Every problem at once, as one message for PutJobFailureResult.
pub fn failure_message(problems: &[ApprovalProblem]) -> String {
    let text = format!(
        "Distinct-approvers check failed: {}.",
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    // PutJobFailureResult accepts up to 5000 characters.
    text.chars().take(5000).collect()
}

/// Passes when every `required` approval's latest execution Succeeded with a recorded approver,
/// and no identity approved two of them (IAM names are case-insensitive, so ARNs compare so).
/// Returns (action, approver) pairs in `required` order, or every problem found.
pub fn distinct_approvers(
    required: &[String],
    records: &[ActionRecord],
) -> Result<Vec<(String, String)>, Vec<ApprovalProblem>> {
    let mut problems = Vec::new();
    let mut approved = Vec::new();
    for action in required {
        let latest = records
            .iter()
            .filter(|r| &r.action_name == action)
            .max_by_key(|r| r.last_update_millis);
        match latest {
            None => problems.push(ApprovalProblem::Missing {
                action: action.clone(),
            }),
            Some(r) if r.status != "Succeeded" => problems.push(ApprovalProblem::NotApproved {
                action: action.clone(),
                status: r.status.clone(),
            }),
            Some(r) => match r.updated_by.as_deref().filter(|s| !s.is_empty()) {
                None => problems.push(ApprovalProblem::NoApprover {
                    action: action.clone(),
                }),
                Some(by) => approved.push((action.clone(), by.to_owned())),
            },
        }
    }
    let mut by_approver: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (action, by) in &approved {
        by_approver
            .entry(by.to_ascii_lowercase())
            .or_insert_with(|| (by.clone(), Vec::new()))
            .1
            .push(action.clone());
    }
    for (approver, actions) in by_approver.into_values() {
        if actions.len() > 1 {
            problems.push(ApprovalProblem::SameApprover { actions, approver });
        }
    }
    if problems.is_empty() {
        Ok(approved)
    } else {
        Err(problems)
    }
}

/// Real event shapes (from the AWS documentation's examples, with this project's names).
#[cfg(test)]
pub(crate) mod fixtures {
    pub const CODECOMMIT_PUSH: &str = r#"{
      "version": "0",
      "id": "01234567-0123-0123-0123-012345678901",
      "detail-type": "CodeCommit Repository State Change",
      "source": "aws.codecommit",
      "account": "123456789012",
      "time": "2026-11-22T03:00:00Z",
      "region": "us-east-1",
      "resources": ["arn:aws:codecommit:us-east-1:123456789012:codedeploy-agent"],
      "detail": {
        "callerUserArn": "arn:aws:iam::123456789012:user/alice",
        "commitId": "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6",
        "event": "referenceUpdated",
        "oldCommitId": "a2bc1d2e0a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6",
        "referenceFullName": "refs/heads/master",
        "referenceName": "master",
        "referenceType": "branch",
        "repositoryId": "12345678-1234-5678-abcd-12345678abcd",
        "repositoryName": "codedeploy-agent"
      }
    }"#;

    pub const IMAGE_AVAILABLE: &str = r#"{
      "versionlessArn": "arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat",
      "semver": 1237940039285380274899124227,
      "arn": "arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat/1.0.0/3",
      "name": "codedeploy-agent-qat",
      "version": "1.0.0",
      "type": "AMI",
      "buildVersion": 3,
      "state": { "status": "AVAILABLE" },
      "platform": "Linux",
      "imageRecipe": {
        "arn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-qat/1.0.0",
        "name": "codedeploy-agent-qat"
      },
      "sourcePipelineArn": "arn:aws:imagebuilder:us-east-1:123456789012:image-pipeline/codedeploy-agent-qat",
      "infrastructureConfiguration": {
        "arn": "arn:aws:imagebuilder:us-east-1:123456789012:infrastructure-configuration/codedeploy-agent-qat",
        "snsTopicArn": "arn:aws:sns:us-east-1:123456789012:codedeploy-agent-qat-image-ready"
      },
      "imageTestsConfiguration": { "imageTestsEnabled": true, "timeoutMinutes": 90 },
      "dateCreated": "Nov 22, 2026 3:00:00 AM",
      "outputResources": {
        "amis": [
          {
            "region": "us-east-1",
            "image": "ami-0123456789abcdef0",
            "name": "codedeploy-agent-qat-2026-11-22T03-00-00.000Z",
            "accountId": "123456789012"
          }
        ]
      },
      "buildExecutionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
      "testExecutionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE22222",
      "distributionExecutionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE33333",
      "integrationExecutionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE44444"
    }"#;

    pub const SNS_ENVELOPE: &str = r#"{
      "Records": [
        {
          "EventSource": "aws:sns",
          "EventVersion": "1.0",
          "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:codedeploy-agent-qat-image-ready:0b9b2a3e-1111-2222-3333-444455556666",
          "Sns": {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:codedeploy-agent-qat-image-ready",
            "Subject": null,
            "Message": "MESSAGE",
            "Timestamp": "2026-11-22T03:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-EXAMPLE.pem",
            "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {}
          }
        }
      ]
    }"#;

    pub const CODEPIPELINE_JOB: &str = r#"{
      "CodePipeline.job": {
        "id": "11111111-abcd-1111-abcd-111111abcdef",
        "accountId": "123456789012",
        "data": {
          "actionConfiguration": {
            "configuration": {
              "FunctionName": "codedeploy-agent-check-distinct-approvers",
              "UserParameters": "{\"approvals\":[\"QCApproval\",\"PMOApproval\"]}"
            }
          },
          "inputArtifacts": [],
          "outputArtifacts": [],
          "artifactCredentials": {
            "secretAccessKey": "EXAMPLE",
            "sessionToken": "EXAMPLE",
            "accessKeyId": "EXAMPLE"
          },
          "encryptionKey": {
            "id": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "type": "KMS"
          }
        }
      }
    }"#;

    pub const QAT_IMAGE_PIPELINE: &str =
        "arn:aws:imagebuilder:us-east-1:123456789012:image-pipeline/codedeploy-agent-qat";

    /// The Image Builder message wrapped in the SNS envelope, with `status` patched in.
    pub fn sns_image_event(status: &str) -> String {
        let image = IMAGE_AVAILABLE.replace(
            r#""status": "AVAILABLE""#,
            &format!(r#""status": "{status}""#),
        );
        let compact: serde_json::Value = serde_json::from_str(&image).expect("fixture");
        SNS_ENVELOPE.replace(
            "\"MESSAGE\"",
            &serde_json::to_string(&compact.to_string()).expect("string"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::events::{CodeCommitEvent, SnsEvent};

    fn push(edit: impl Fn(&mut serde_json::Value)) -> CodeCommitEvent {
        let mut v: serde_json::Value = serde_json::from_str(CODECOMMIT_PUSH).expect("fixture");
        edit(&mut v);
        serde_json::from_value(v).expect("event")
    }

    #[test]
    fn push_to_the_branch_starts_with_the_commit_as_token() {
        assert_eq!(
            on_push(&push(|_| {}), "master"),
            PushDecision::Start {
                commit_id: "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6".into(),
                client_token: "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4".into(),
            }
        );
        let created = push(|v| v["detail"]["event"] = "referenceCreated".into());
        assert!(matches!(
            on_push(&created, "master"),
            PushDecision::Start { .. }
        ));
    }

    #[test]
    fn other_pushes_are_ignored_with_a_reason() {
        let cases = [
            (
                push(|v| v["detail"]["referenceName"] = "feature".into()),
                "branch feature in codedeploy-agent is not the release branch master",
            ),
            (
                push(|v| v["detail"]["referenceType"] = "tag".into()),
                "tag master in codedeploy-agent is not the release branch master",
            ),
            (
                push(|v| {
                    v["detail"]["event"] = "referenceDeleted".into();
                    v["detail"]
                        .as_object_mut()
                        .expect("object")
                        .remove("commitId");
                }),
                "referenceDeleted of master does not build an image",
            ),
            (
                push(|v| v["source"] = "aws.s3".into()),
                "not a CodeCommit state change (aws.s3 / CodeCommit Repository State Change)",
            ),
        ];
        for (event, reason) in cases {
            assert_eq!(
                on_push(&event, "master"),
                PushDecision::Ignore(reason.into())
            );
        }
    }

    fn image_decision(status: &str, pipeline: &str) -> ImageDecision {
        let event: SnsEvent = serde_json::from_str(&sns_image_event(status)).expect("sns event");
        on_image_message(&event.records[0].sns.message, pipeline)
    }

    #[test]
    fn available_image_of_the_expected_pipeline_starts_the_code_pipeline() {
        let ImageDecision::Start {
            image_arn,
            ami,
            client_request_token,
        } = image_decision("AVAILABLE", QAT_IMAGE_PIPELINE)
        else {
            panic!("expected Start");
        };
        assert_eq!(
            image_arn,
            "arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat/1.0.0/3"
        );
        assert_eq!(ami.as_deref(), Some("ami-0123456789abcdef0 (us-east-1)"));
        assert_eq!(
            client_request_token,
            "arn-aws-imagebuilder-us-east-1-123456789012-image-codedeploy-agent-qat-1-0-0-3"
        );
        assert!(client_request_token.len() <= 128);
    }

    #[test]
    fn failed_unrelated_and_malformed_messages_are_ignored() {
        assert_eq!(
            image_decision("FAILED", QAT_IMAGE_PIPELINE),
            ImageDecision::Ignore("image arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat/1.0.0/3 is FAILED".into())
        );
        let other = "arn:aws:imagebuilder:us-east-1:123456789012:image-pipeline/other";
        assert!(
            matches!(image_decision("AVAILABLE", other), ImageDecision::Ignore(r) if r.contains("not arn:aws:imagebuilder:us-east-1:123456789012:image-pipeline/other"))
        );
        assert!(
            matches!(on_image_message("hello", QAT_IMAGE_PIPELINE), ImageDecision::Ignore(r) if r.starts_with("not an Image Builder image message"))
        );
    }

    #[test]
    fn long_image_arns_keep_the_distinguishing_tail_of_the_token() {
        let long = IMAGE_AVAILABLE.replace(
            "codedeploy-agent-qat/1.0.0/3",
            &format!("{}/1.0.0/42", "x".repeat(200)),
        );
        let ImageDecision::Start {
            client_request_token,
            ..
        } = on_image_message(&long, QAT_IMAGE_PIPELINE)
        else {
            panic!("expected Start");
        };
        assert_eq!(client_request_token.len(), 128);
        assert!(client_request_token.ends_with("-1-0-0-42"));
    }

    fn rec(action: &str, status: &str, by: Option<&str>, at: i64) -> ActionRecord {
        ActionRecord {
            action_name: action.into(),
            status: status.into(),
            updated_by: by.map(Into::into),
            last_update_millis: at,
        }
    }

    fn required() -> Vec<String> {
        approver_parameters(Some(r#"{"approvals":["QCApproval","PMOApproval"]}"#)).expect("params")
    }

    const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
    const BOB: &str = "arn:aws:sts::123456789012:assumed-role/pmo/bob@example.com";

    #[test]
    fn two_different_approvers_pass() {
        let records = [
            rec(
                "DeployInPlace",
                "Succeeded",
                Some("arn:aws:iam::123456789012:role/pipeline"),
                1,
            ),
            rec("QCApproval", "Succeeded", Some(ALICE), 2),
            rec("PMOApproval", "Succeeded", Some(BOB), 3),
        ];
        assert_eq!(
            distinct_approvers(&required(), &records),
            Ok(vec![
                ("QCApproval".into(), ALICE.into()),
                ("PMOApproval".into(), BOB.into())
            ])
        );
    }

    #[test]
    fn the_same_person_approving_both_fails_with_a_clear_message() {
        let records = [
            rec("QCApproval", "Succeeded", Some(ALICE), 2),
            rec(
                "PMOApproval",
                "Succeeded",
                Some(&ALICE.to_uppercase().replace("ARN:AWS:IAM", "arn:aws:iam")),
                3,
            ),
        ];
        let problems = distinct_approvers(&required(), &records).expect_err("same approver");
        assert_eq!(
            failure_message(&problems),
            "Distinct-approvers check failed: QCApproval and PMOApproval were all approved by arn:aws:iam::123456789012:user/alice; each must be approved by a different person."
        );
    }

    #[test]
    fn missing_rejected_and_anonymous_approvals_are_all_reported() {
        let records = [rec("PMOApproval", "Succeeded", None, 3)];
        let problems = distinct_approvers(&required(), &records).expect_err("problems");
        assert_eq!(
            failure_message(&problems),
            "Distinct-approvers check failed: approval QCApproval has no result in this pipeline execution; approval PMOApproval succeeded but CodePipeline recorded no approver."
        );
        let rejected = [
            rec("QCApproval", "Failed", Some(ALICE), 2),
            rec("PMOApproval", "Succeeded", Some(BOB), 3),
        ];
        assert_eq!(
            distinct_approvers(&required(), &rejected),
            Err(vec![ApprovalProblem::NotApproved {
                action: "QCApproval".into(),
                status: "Failed".into()
            }])
        );
    }

    #[test]
    fn a_retried_approval_counts_by_its_latest_execution() {
        let records = [
            rec("QCApproval", "Succeeded", Some(BOB), 1),
            rec("QCApproval", "Succeeded", Some(ALICE), 5),
            rec("PMOApproval", "Succeeded", Some(BOB), 6),
        ];
        assert!(distinct_approvers(&required(), &records).is_ok());
        let records = [
            rec("QCApproval", "Succeeded", Some(ALICE), 7),
            rec("QCApproval", "Succeeded", Some(BOB), 1),
            rec("PMOApproval", "Succeeded", Some(BOB), 6),
        ];
        assert!(distinct_approvers(&required(), &records).is_ok());
    }

    #[test]
    fn user_parameters_must_name_two_distinct_approvals() {
        for bad in [
            None,
            Some("QCApproval"),
            Some(r#"{"approvals":["QCApproval"]}"#),
            Some(r#"{"approvals":["A","A"]}"#),
        ] {
            let err = approver_parameters(bad).expect_err("bad parameters");
            assert!(err.starts_with("UserParameters must be"), "{err}");
        }
    }
}
