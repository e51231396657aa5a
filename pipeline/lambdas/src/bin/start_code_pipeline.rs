//! SNS (Image Builder image ready) -> start a CodePipeline. Deployed twice: QAT and production.
//! Env: CODE_PIPELINE_NAME, IMAGE_PIPELINE_ARN (only images of that pipeline count).
//! The pipeline starts at the commit the image baked (read from its recipe), with the image's
//! ARN as the pipeline variable ImageArn: the revision deployed is the one whose agent is on
//! the AMI, and the approval stage later promotes exactly that image and commit.

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
        let config = aws::sdk_config().await;
        let client = aws_sdk_codepipeline::Client::new(&config);
        let imagebuilder = aws_sdk_imagebuilder::Client::new(&config);
        lambda_runtime::run(service_fn(|event: LambdaEvent<SnsEvent>| {
            let (client, imagebuilder, name, image_pipeline) = (&client, &imagebuilder, &name, &image_pipeline);
            async move {
                let mut results = Vec::new();
                for record in &event.payload.records {
                    match on_image_message(&record.sns.message, image_pipeline) {
                        ImageDecision::Ignore(reason) => {
                            tracing::info!(topic = %record.sns.topic_arn, %reason, "image message ignored");
                            results.push(format!("ignored: {reason}"));
                        }
                        ImageDecision::Start { image_arn, ami, client_request_token } => {
                            let baked = pipeline_lambdas::image::baked(imagebuilder, &image_arn).await?;
                            let Some(commit) = baked.commit() else {
                                return Err(Error::from(format!("image {image_arn} records no commit in its recipe's agent component; it was not built by start-qat-image")));
                            };
                            let execution = aws::start_code_pipeline(client, name, &client_request_token, commit, &[("ImageArn", &image_arn)]).await?;
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
