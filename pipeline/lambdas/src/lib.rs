//! Lambda glue for the codedeploy-agent pipelines (pipeline/README.md has the whole flow).
//!
//! Seven functions, six binaries (`start-code-pipeline` is deployed twice, for QAT and prod):
//!
//! | binary                     | trigger                               | does                                             |
//! |----------------------------|---------------------------------------|--------------------------------------------------|
//! | `start-image-pipeline`     | CodeBuild publish step (Invoke)       | new QAT recipe for the commit's artifact, bake   |
//! | `start-code-pipeline`      | SNS image-ready (Image Builder)       | start the QAT or production pipeline at the commit the image baked |
//! | `refresh-instances`        | CodePipeline Invoke action            | instance refresh of the QAT group onto the new AMI |
//! | `check-distinct-approvers` | CodePipeline Invoke action            | QC and PMO approvers must differ                 |
//! | `start-prod-image`         | CodePipeline Invoke action            | bake production on the approved QAT image        |
//! | `prod-deployment-group`    | CloudFormation custom resource        | the blue/green deployment group and its first ASG |
//!
//! The decisions are pure functions in [`decide`] over the event shapes in [`events`]; [`aws`]
//! makes the calls. The two Invoke-action handlers report to CodePipeline exactly once per job.

pub mod aws;
pub mod custom_resource;
pub mod decide;
pub mod events;
pub mod image;
pub mod refresh;
pub mod release;

/// Reads a required environment variable, naming it in the error.
pub fn env(name: &str) -> Result<String, MissingEnv> {
    std::env::var(name).map_err(|_| MissingEnv(name.to_owned()))
}

#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} is not set (it comes from pipeline/templates/lambdas.yml)")]
pub struct MissingEnv(pub String);

/// Logging to stdout (CloudWatch Logs), level from RUST_LOG (default info), no ANSI colours.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .init();
}
