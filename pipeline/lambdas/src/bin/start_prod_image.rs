//! CodePipeline Invoke action: start the production image pipeline, report the job once.
//! Env: IMAGE_PIPELINE_ARN.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::events::CodePipelineEvent;
use pipeline_lambdas::{aws, env};

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pipeline_arn = env("IMAGE_PIPELINE_ARN")?;
        let config = aws::sdk_config().await;
        let codepipeline = aws_sdk_codepipeline::Client::new(&config);
        let imagebuilder = aws_sdk_imagebuilder::Client::new(&config);
        lambda_runtime::run(service_fn(|event: LambdaEvent<CodePipelineEvent>| {
            let (codepipeline, imagebuilder, pipeline_arn) =
                (&codepipeline, &imagebuilder, &pipeline_arn);
            async move {
                let outcome = aws::start_prod_image(
                    codepipeline,
                    imagebuilder,
                    &event.payload.job.id,
                    event
                        .payload
                        .job
                        .data
                        .action_configuration
                        .configuration
                        .user_parameters
                        .as_deref(),
                    pipeline_arn,
                )
                .await?;
                Ok::<_, Error>(format!("{outcome:?}"))
            }
        }))
        .await
    })
}
