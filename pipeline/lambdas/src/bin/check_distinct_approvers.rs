//! CodePipeline Invoke action: the QC and PMO approvals of this execution must come from
//! different people. Reports the job exactly once.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::aws;
use pipeline_lambdas::events::CodePipelineEvent;

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = aws_sdk_codepipeline::Client::new(&aws::sdk_config().await);
        lambda_runtime::run(service_fn(|event: LambdaEvent<CodePipelineEvent>| {
            let client = &client;
            async move {
                let job = &event.payload.job;
                let params = job
                    .data
                    .action_configuration
                    .configuration
                    .user_parameters
                    .as_deref();
                let outcome = aws::check_distinct_approvers(client, &job.id, params).await?;
                Ok::<_, Error>(format!("{outcome:?}"))
            }
        }))
        .await
    })
}
