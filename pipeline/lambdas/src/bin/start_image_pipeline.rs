//! EventBridge (CodeCommit push to the release branch) -> start the QAT image pipeline.
//! Env: IMAGE_PIPELINE_ARN, BRANCH.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::decide::{PushDecision, on_push};
use pipeline_lambdas::events::CodeCommitEvent;
use pipeline_lambdas::{aws, env};

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pipeline_arn = env("IMAGE_PIPELINE_ARN")?;
        let branch = env("BRANCH")?;
        let client = aws_sdk_imagebuilder::Client::new(&aws::sdk_config().await);
        lambda_runtime::run(service_fn(|event: LambdaEvent<CodeCommitEvent>| {
            let (client, pipeline_arn, branch) = (&client, &pipeline_arn, &branch);
            async move {
                match on_push(&event.payload, branch) {
                    PushDecision::Ignore(reason) => {
                        tracing::info!(%reason, "push ignored");
                        Ok::<_, Error>(format!("ignored: {reason}"))
                    }
                    PushDecision::Start {
                        commit_id,
                        client_token,
                    } => {
                        let build =
                            aws::start_image_pipeline(client, pipeline_arn, &client_token).await?;
                        tracing::info!(%commit_id, %build, "image pipeline started");
                        Ok(format!("started {build} for {commit_id}"))
                    }
                }
            }
        }))
        .await
    })
}
