//! Lambda glue for the codedeploy-agent pipelines (pipeline/README.md has the whole flow).
//!
//! Five functions, four binaries (`start-code-pipeline` is deployed twice, for QAT and prod):
//!
//! | binary                     | trigger                          | does                                   |
//! |----------------------------|----------------------------------|----------------------------------------|
//! | `start-image-pipeline`     | EventBridge CodeCommit push      | start the QAT image pipeline           |
//! | `start-code-pipeline`      | SNS image-ready (Image Builder)  | start the QAT or production pipeline   |
//! | `check-distinct-approvers` | CodePipeline Invoke action       | QC and PMO approvers must differ       |
//! | `start-prod-image`         | CodePipeline Invoke action       | start the production image pipeline    |
//!
//! The decisions are pure functions in [`decide`] over the event shapes in [`events`]; [`aws`]
//! makes the calls. The two Invoke-action handlers report to CodePipeline exactly once per job.

pub mod aws;
pub mod decide;
pub mod events;

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
