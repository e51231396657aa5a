//! The AWS calls. Each Invoke-action handler computes an outcome (any error becomes a job
//! failure with its message) and then reports it with exactly one PutJobSuccessResult or
//! PutJobFailureResult: [`finish_job`] is the only place that reports.

use aws_config::BehaviorVersion;
use aws_sdk_codepipeline::error::DisplayErrorContext;
use aws_sdk_codepipeline::types::{ActionExecutionFilter, FailureDetails, FailureType};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::decide::{self, ActionRecord};

/// The lean HTTP client (rustls + ring), passed to every SDK config (docs/build-notes.md).
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Region, credentials and endpoint from the Lambda environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}

/// An AWS call that failed, with the SDK's whole error chain.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct AwsCallError {
    pub operation: &'static str,
    pub message: String,
}

fn call_error<E: std::error::Error>(operation: &'static str) -> impl FnOnce(E) -> AwsCallError {
    move |e| AwsCallError {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// Starts an image pipeline; returns the new image build version ARN.
pub async fn start_image_pipeline(
    client: &aws_sdk_imagebuilder::Client,
    pipeline_arn: &str,
    client_token: &str,
) -> Result<String, AwsCallError> {
    let out = client
        .start_image_pipeline_execution()
        .image_pipeline_arn(pipeline_arn)
        .client_token(client_token)
        .send()
        .await
        .map_err(call_error("StartImagePipelineExecution"))?;
    Ok(out
        .image_build_version_arn()
        .unwrap_or("(no ARN returned)")
        .to_owned())
}

/// Starts a code pipeline at `commit` (the Source action named `Source` takes that commit
/// instead of the branch head: CodePipeline V2 source revision overrides,
/// <https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-trigger-source-overrides.html>),
/// with pipeline-level `variables`; returns the execution id.
pub async fn start_code_pipeline(
    client: &aws_sdk_codepipeline::Client,
    name: &str,
    client_request_token: &str,
    commit: &str,
    variables: &[(&str, &str)],
) -> Result<String, AwsCallError> {
    use aws_sdk_codepipeline::types::{
        PipelineVariable, SourceRevisionOverride, SourceRevisionType,
    };
    let mut request = client
        .start_pipeline_execution()
        .name(name)
        .client_request_token(client_request_token)
        .source_revisions(
            SourceRevisionOverride::builder()
                .action_name("Source")
                .revision_type(SourceRevisionType::CommitId)
                .revision_value(commit)
                .build()
                .map_err(call_error("StartPipelineExecution"))?,
        );
    for (var, value) in variables {
        request = request.variables(
            PipelineVariable::builder()
                .name(*var)
                .value(*value)
                .build()
                .map_err(call_error("StartPipelineExecution"))?,
        );
    }
    let out = request
        .send()
        .await
        .map_err(call_error("StartPipelineExecution"))?;
    Ok(out
        .pipeline_execution_id()
        .unwrap_or("(no id returned)")
        .to_owned())
}

/// What a job reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Success(String),
    Failure(String),
    /// Not finished: CodePipeline invokes the function again with this continuation token
    /// (<https://docs.aws.amazon.com/codepipeline/latest/userguide/actions-invoke-lambda-function.html>).
    Continue {
        summary: String,
        token: String,
    },
}

/// Reports `outcome` for `job_id`: the one PutJobSuccessResult or PutJobFailureResult.
pub async fn finish_job(
    client: &aws_sdk_codepipeline::Client,
    job_id: &str,
    outcome: &JobOutcome,
) -> Result<(), AwsCallError> {
    match outcome {
        JobOutcome::Success(summary) => {
            tracing::info!(job_id, summary, "job succeeded");
            client
                .put_job_success_result()
                .job_id(job_id)
                .execution_details(
                    aws_sdk_codepipeline::types::ExecutionDetails::builder()
                        .summary(summary.chars().take(2048).collect::<String>())
                        .build(),
                )
                .send()
                .await
                .map_err(call_error("PutJobSuccessResult"))?;
        }
        JobOutcome::Continue { summary, token } => {
            tracing::info!(job_id, summary, token, "job continues");
            client
                .put_job_success_result()
                .job_id(job_id)
                .continuation_token(token)
                .execution_details(
                    aws_sdk_codepipeline::types::ExecutionDetails::builder()
                        .summary(summary.chars().take(2048).collect::<String>())
                        .build(),
                )
                .send()
                .await
                .map_err(call_error("PutJobSuccessResult"))?;
        }
        JobOutcome::Failure(message) => {
            tracing::warn!(job_id, message, "job failed");
            let details = FailureDetails::builder()
                .r#type(FailureType::JobFailed)
                .message(message.chars().take(5000).collect::<String>())
                .build()
                .map_err(call_error("PutJobFailureResult"))?;
            client
                .put_job_failure_result()
                .job_id(job_id)
                .failure_details(details)
                .send()
                .await
                .map_err(call_error("PutJobFailureResult"))?;
        }
    }
    Ok(())
}

/// The approval actions' executions in the pipeline execution that runs `job_id`.
pub async fn approval_records(
    client: &aws_sdk_codepipeline::Client,
    job_id: &str,
) -> Result<Vec<ActionRecord>, AwsCallError> {
    let details = client
        .get_job_details()
        .job_id(job_id)
        .send()
        .await
        .map_err(call_error("GetJobDetails"))?;
    let context = details
        .job_details()
        .and_then(|d| d.data())
        .and_then(|d| d.pipeline_context());
    let (Some(pipeline), Some(execution)) = (
        context.and_then(|c| c.pipeline_name()),
        context.and_then(|c| c.pipeline_execution_id()),
    ) else {
        return Err(AwsCallError {
            operation: "GetJobDetails",
            message: "the job has no pipeline name or execution id".into(),
        });
    };
    let mut records = Vec::new();
    let mut next_token = None;
    loop {
        let page = client
            .list_action_executions()
            .pipeline_name(pipeline)
            .filter(
                ActionExecutionFilter::builder()
                    .pipeline_execution_id(execution)
                    .build(),
            )
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(call_error("ListActionExecutions"))?;
        records.extend(page.action_execution_details().iter().map(|d| {
            ActionRecord {
                action_name: d.action_name().unwrap_or_default().to_owned(),
                status: d
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                updated_by: d.updated_by().map(str::to_owned),
                last_update_millis: d
                    .last_update_time()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
            }
        }));
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => break,
        }
    }
    Ok(records)
}

/// The distinct-approvers Invoke action: decide, then report exactly once.
pub async fn check_distinct_approvers(
    client: &aws_sdk_codepipeline::Client,
    job_id: &str,
    user_parameters: Option<&str>,
) -> Result<JobOutcome, AwsCallError> {
    let outcome = match decide::approver_parameters(user_parameters) {
        Err(message) => JobOutcome::Failure(message),
        Ok(required) => match approval_records(client, job_id).await {
            Err(e) => JobOutcome::Failure(format!("could not read the approvals: {e}")),
            Ok(records) => match decide::distinct_approvers(&required, &records) {
                Ok(approved) => JobOutcome::Success(format!(
                    "Approved by different people: {}",
                    approved
                        .iter()
                        .map(|(action, by)| format!("{action} by {by}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(problems) => JobOutcome::Failure(decide::failure_message(&problems)),
            },
        },
    };
    finish_job(client, job_id, &outcome).await?;
    Ok(outcome)
}

/// The start-production-image Invoke action: the production image is baked on top of the
/// QAT image this execution deployed and had approved (same agent artifact, same parent, same
/// component versions), and only if that image carries the approved commit. Reports once.
pub async fn start_prod_image(
    codepipeline: &aws_sdk_codepipeline::Client,
    imagebuilder: &aws_sdk_imagebuilder::Client,
    job_id: &str,
    user_parameters: Option<&str>,
    image_pipeline_arn: &str,
) -> Result<JobOutcome, AwsCallError> {
    // The job id is unique per action execution: a redelivered invocation starts one build.
    let token: String = job_id.chars().take(36).collect();
    let outcome = match promote(imagebuilder, user_parameters, image_pipeline_arn, &token).await {
        Ok(summary) => JobOutcome::Success(summary),
        Err(message) => JobOutcome::Failure(message),
    };
    finish_job(codepipeline, job_id, &outcome).await?;
    Ok(outcome)
}

async fn promote(
    imagebuilder: &aws_sdk_imagebuilder::Client,
    user_parameters: Option<&str>,
    image_pipeline_arn: &str,
    token: &str,
) -> Result<String, String> {
    let params = crate::release::promote_parameters(user_parameters)?;
    let qat = crate::image::baked(imagebuilder, &params.qat_image)
        .await
        .map_err(|e| format!("could not read the QAT image: {e}"))?;
    crate::release::check_promotion(&params.commit, qat.commit())?;
    let change = crate::image::RecipeChange {
        version: &qat.recipe_version,
        agent_parameters: &qat.agent_parameters,
        parent_image: Some(&params.qat_image),
        description: format!("commit {} on QAT image {}", params.commit, params.qat_image),
    };
    let build = crate::image::bake(imagebuilder, image_pipeline_arn, &change, token)
        .await
        .map_err(|e| format!("could not start the production image pipeline: {e}"))?;
    Ok(format!(
        "Started production image build {build} from QAT image {} (commit {})",
        params.qat_image, params.commit
    ))
}
