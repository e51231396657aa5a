//! Invoked (asynchronously) by CodeBuild's publish step after the agent of a commit is in S3:
//! a new QAT recipe version bakes exactly that artifact, then the QAT image pipeline runs.
//! Env: IMAGE_PIPELINE_ARN.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::release::{self, ReleaseEvent};
use pipeline_lambdas::{aws, env, image};

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pipeline_arn = env("IMAGE_PIPELINE_ARN")?;
        let client = aws_sdk_imagebuilder::Client::new(&aws::sdk_config().await);
        lambda_runtime::run(service_fn(|event: LambdaEvent<ReleaseEvent>| {
            let (client, pipeline_arn) = (&client, &pipeline_arn);
            async move {
                let r = &event.payload;
                release::validate_release(r)?;
                let params = release::release_parameters(r);
                let change = image::RecipeChange {
                    version: &r.recipe_version,
                    agent_parameters: &params,
                    parent_image: None,
                    description: format!("agent {} ({}) of commit {}", r.version, r.arch, r.commit),
                };
                // The commit id as client token: a redelivered invocation starts one build.
                let token: String = r.commit.chars().take(36).collect();
                let build = image::bake(client, pipeline_arn, &change, &token).await?;
                tracing::info!(commit = %r.commit, %build, "QAT image pipeline started");
                Ok::<_, Error>(format!("started {build} for {}", r.commit))
            }
        }))
        .await
    })
}
