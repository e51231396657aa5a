//! CodePipeline Invoke action RefreshQAT: instance refresh of the QAT Auto Scaling group onto
//! the new AMI, polled through continuation tokens. Reports the job exactly once per invocation.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::aws::{self, JobOutcome};
use pipeline_lambdas::events::CodePipelineEvent;
use pipeline_lambdas::refresh;

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = aws::sdk_config().await;
        let codepipeline = aws_sdk_codepipeline::Client::new(&config);
        let autoscaling = aws_sdk_autoscaling::Client::new(&config);
        lambda_runtime::run(service_fn(|event: LambdaEvent<CodePipelineEvent>| {
            let (codepipeline, autoscaling) = (&codepipeline, &autoscaling);
            async move {
                let job = &event.payload.job;
                let params = job
                    .data
                    .action_configuration
                    .configuration
                    .user_parameters
                    .as_deref();
                let outcome = match refresh::refresh_parameters(params) {
                    Err(message) => JobOutcome::Failure(message),
                    Ok(p) => match refresh::step(
                        autoscaling,
                        &p.auto_scaling_group,
                        job.data.continuation_token.as_deref(),
                    )
                    .await
                    {
                        Ok(outcome) => outcome,
                        Err(e) => JobOutcome::Failure(e.to_string()),
                    },
                };
                aws::finish_job(codepipeline, &job.id, &outcome).await?;
                Ok::<_, Error>(format!("{outcome:?}"))
            }
        }))
        .await
    })
}
