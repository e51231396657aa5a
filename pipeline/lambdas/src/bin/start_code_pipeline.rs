//! SNS (Image Builder image ready) -> start a CodePipeline. Deployed twice: QAT and production.
//! Env: CODE_PIPELINE_NAME, IMAGE_PIPELINE_ARN (only images of that pipeline count).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::decide::{ImageDecision, on_image_message};
use pipeline_lambdas::events::SnsEvent;
use pipeline_lambdas::{aws, env};

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let name = env("CODE_PIPELINE_NAME")?;
        let image_pipeline = env("IMAGE_PIPELINE_ARN")?;
        let client = aws_sdk_codepipeline::Client::new(&aws::sdk_config().await);
        lambda_runtime::run(service_fn(|event: LambdaEvent<SnsEvent>| {
            let (client, name, image_pipeline) = (&client, &name, &image_pipeline);
            async move {
                let mut results = Vec::new();
                for record in &event.payload.records {
                    match on_image_message(&record.sns.message, image_pipeline) {
                        ImageDecision::Ignore(reason) => {
                            tracing::info!(topic = %record.sns.topic_arn, %reason, "image message ignored");
                            results.push(format!("ignored: {reason}"));
                        }
                        ImageDecision::Start { image_arn, ami, client_request_token } => {
                            let execution = aws::start_code_pipeline(client, name, &client_request_token).await?;
                            tracing::info!(%image_arn, ami = ami.as_deref().unwrap_or("-"), %execution, pipeline = %name, "code pipeline started");
                            results.push(format!("started {name} execution {execution} for {image_arn}"));
                        }
                    }
                }
                Ok::<_, Error>(results)
            }
        }))
        .await
    })
}
