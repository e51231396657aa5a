//! The QAT pipeline's RefreshQAT action: put the new AMI on the running QAT instances before
//! CodeDeploy deploys to them. The launch template resolves its AMI from the SSM parameter the
//! QAT image's distribution writes, so an instance refresh launches replacements on the new
//! AMI (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/asg-instance-refresh.html>).
//! The action starts the refresh and answers with a continuation token until it ends; an
//! instance launched by the refresh gets the group's last successful revision from CodeDeploy
//! before it is InService, and the next action deploys this execution's revision.

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::{InstanceRefreshStatus, RefreshPreferences};
use serde::Deserialize;

use crate::aws::{AwsCallError, JobOutcome};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshParameters {
    pub auto_scaling_group: String,
}

pub fn refresh_parameters(user_parameters: Option<&str>) -> Result<RefreshParameters, String> {
    const SHAPE: &str = r#"UserParameters must be {"autoScalingGroup":"<name>"}"#;
    let raw = user_parameters.ok_or_else(|| format!("{SHAPE}; it is missing"))?;
    serde_json::from_str(raw).map_err(|e| format!("{SHAPE}; got {raw:?} ({e})"))
}

/// What a refresh's status means for the job.
pub fn on_status(group: &str, id: &str, status: &str, reason: Option<&str>) -> JobOutcome {
    let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
    match status {
        "Successful" => JobOutcome::Success(format!("instance refresh {id} of {group} succeeded")),
        "Pending" | "InProgress" | "Baking" => JobOutcome::Continue {
            summary: format!("instance refresh {id} of {group} is {status}{reason}"),
            token: id.to_owned(),
        },
        other => JobOutcome::Failure(format!(
            "instance refresh {id} of {group} ended {other}{reason}"
        )),
    }
}

fn sdk<E: std::error::Error>(operation: &'static str) -> impl FnOnce(E) -> AwsCallError {
    move |e| AwsCallError {
        operation,
        message: aws_sdk_autoscaling::error::DisplayErrorContext(e).to_string(),
    }
}

/// Starts the refresh (no token yet) or reports on the one `token` names.
pub async fn step(
    client: &Client,
    group: &str,
    token: Option<&str>,
) -> Result<JobOutcome, AwsCallError> {
    let Some(id) = token else {
        let out = client
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .preferences(
                RefreshPreferences::builder()
                    // QAT has one instance: replace it rather than wait for a second.
                    .min_healthy_percentage(0)
                    .instance_warmup(60)
                    .skip_matching(false)
                    .build(),
            )
            .send()
            .await
            .map_err(sdk("StartInstanceRefresh"))?;
        let id = out.instance_refresh_id().unwrap_or_default().to_owned();
        return Ok(JobOutcome::Continue {
            summary: format!("started instance refresh {id} of {group}"),
            token: id,
        });
    };
    let out = client
        .describe_instance_refreshes()
        .auto_scaling_group_name(group)
        .instance_refresh_ids(id)
        .send()
        .await
        .map_err(sdk("DescribeInstanceRefreshes"))?;
    let Some(refresh) = out.instance_refreshes().first() else {
        return Ok(JobOutcome::Failure(format!(
            "instance refresh {id} of {group} is not known to Auto Scaling"
        )));
    };
    let status = refresh
        .status()
        .map(InstanceRefreshStatus::as_str)
        .unwrap_or("Unknown");
    Ok(on_status(group, id, status, refresh.status_reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert!(matches!(
            on_status("g", "r", "Successful", None),
            JobOutcome::Success(_)
        ));
        assert_eq!(
            on_status("g", "r", "InProgress", None),
            JobOutcome::Continue {
                summary: "instance refresh r of g is InProgress".into(),
                token: "r".into()
            }
        );
        assert_eq!(
            on_status("g", "r", "Failed", Some("no capacity")),
            JobOutcome::Failure("instance refresh r of g ended Failed: no capacity".into())
        );
        assert!(matches!(
            on_status("g", "r", "Cancelled", None),
            JobOutcome::Failure(_)
        ));
    }

    #[test]
    fn parameters_name_the_group() {
        assert_eq!(
            refresh_parameters(Some(r#"{"autoScalingGroup":"codedeploy-agent-qat"}"#)),
            Ok(RefreshParameters {
                auto_scaling_group: "codedeploy-agent-qat".into()
            })
        );
        assert!(refresh_parameters(None).is_err());
    }
}
