//! The event shapes the functions receive, as AWS sends them (only the fields we read).

use serde::Deserialize;

/// EventBridge "CodeCommit Repository State Change".
#[derive(Debug, Clone, Deserialize)]
pub struct CodeCommitEvent {
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub detail: CodeCommitDetail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeCommitDetail {
    /// referenceCreated, referenceUpdated or referenceDeleted.
    pub event: String,
    pub repository_name: String,
    pub reference_type: String,
    pub reference_name: String,
    /// Absent for referenceDeleted.
    #[serde(default)]
    pub commit_id: Option<String>,
}

/// An SNS-to-Lambda event.
#[derive(Debug, Clone, Deserialize)]
pub struct SnsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SnsRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SnsRecord {
    #[serde(rename = "Sns")]
    pub sns: SnsMessage,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Message")]
    pub message: String,
}

/// The message Image Builder publishes to the infrastructure configuration's topic: the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMessage {
    pub arn: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: ImageState,
    #[serde(default)]
    pub source_pipeline_arn: Option<String>,
    #[serde(default)]
    pub output_resources: Option<OutputResources>,
}

/// A CloudFormation custom resource request
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requests.html>).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    /// Create, Update or Delete.
    pub request_type: String,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageState {
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutputResources {
    #[serde(default)]
    pub amis: Vec<Ami>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ami {
    pub region: String,
    pub image: String,
}

/// The event CodePipeline sends to a Lambda Invoke action.
#[derive(Debug, Clone, Deserialize)]
pub struct CodePipelineEvent {
    #[serde(rename = "CodePipeline.job")]
    pub job: CodePipelineJob,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CodePipelineJob {
    pub id: String,
    #[serde(rename = "accountId")]
    pub account_id: String,
    pub data: JobData,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobData {
    pub action_configuration: ActionConfiguration,
    /// Set when a previous invocation of this job answered with a continuation token.
    #[serde(default)]
    pub continuation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActionConfiguration {
    pub configuration: ActionConfigurationValues,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActionConfigurationValues {
    #[serde(rename = "FunctionName")]
    pub function_name: String,
    #[serde(rename = "UserParameters", default)]
    pub user_parameters: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codepipeline_job_event_parses_with_user_parameters() {
        let event: CodePipelineEvent =
            serde_json::from_str(crate::decide::fixtures::CODEPIPELINE_JOB).expect("parse");
        assert_eq!(event.job.id, "11111111-abcd-1111-abcd-111111abcdef");
        assert_eq!(
            event
                .job
                .data
                .action_configuration
                .configuration
                .user_parameters
                .as_deref(),
            Some(r#"{"approvals":["QCApproval","PMOApproval"]}"#)
        );
    }
}
