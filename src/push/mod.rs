//! `codedeploy-agent deploy`: push a revision to S3, register it, create a CodeDeploy
//! deployment and follow it live until it ends. This is the operator's side of the public
//! CodeDeploy API (aws-sdk-codedeploy), unrelated to `deploy/`, the on-instance engine.
//!
//! ```text
//! bundle::prepare (validate appspec, tgz/tar/zip or archive as is)
//!   -> upload::put (PutObject, or multipart above a threshold) -> ETag, version id
//!   -> RegisterApplicationRevision -> CreateDeployment -> follow::run (until it ends)
//! ```
//!
//! Exit codes (docs/deploy-command.md): 0 succeeded (or created, with `--no-follow`); 1 the
//! deployment failed or was stopped; 2 usage: bad options, an invalid bundle or appspec;
//! 3 AWS or configuration: credentials, region, S3 or CodeDeploy errors; 130 interrupted:
//! stopped following, the deployment goes on.

pub mod bundle;
pub mod follow;
pub mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_codedeploy::types::{
    BundleType, FileExistsBehavior, RevisionLocation, RevisionLocationType, S3Location,
};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::cli::TargetOs;

/// The deployment succeeded (or was created, with `--no-follow`).
pub const EXIT_SUCCEEDED: u8 = 0;
/// The deployment ended Failed or Stopped.
pub const EXIT_DEPLOYMENT_FAILED: u8 = 1;
/// Bad options, an invalid bundle or appspec: nothing was uploaded or created.
pub const EXIT_USAGE: u8 = 2;
/// AWS or configuration trouble: credentials, region, S3, CodeDeploy API errors.
pub const EXIT_AWS: u8 = 3;
/// Ctrl-C while following: we stopped watching, the deployment itself goes on.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Options of `codedeploy-agent deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// The CodeDeploy application.
    #[arg(long, value_name = "NAME")]
    pub application_name: String,
    /// The deployment group to deploy to.
    #[arg(long, value_name = "NAME")]
    pub deployment_group_name: String,
    /// Where to upload the bundle: s3://bucket/key.
    #[arg(long, value_name = "S3_URL")]
    pub s3_location: String,
    /// The bundle: a directory (validated, then packed) or an existing zip/tar/tgz archive
    /// (validated, uploaded as is).
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub source: PathBuf,
    /// How to pack a directory (tgz, tar or zip; default tgz). An archive's type is read from
    /// its contents; if given, this must match it.
    #[arg(long, value_enum)]
    pub bundle_type: Option<BundleKind>,
    /// Leave files and directories whose names start with a dot (.git, .env, ...) out of a
    /// packed directory (as `aws deploy push --ignore-hidden-files`).
    #[arg(long)]
    pub ignore_hidden_files: bool,
    /// Description of the revision and the deployment.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The deployment configuration (default: the group's).
    #[arg(long, value_name = "NAME")]
    pub deployment_config_name: Option<String>,
    /// DISALLOW, OVERWRITE or RETAIN: files at install locations the previous deployment did
    /// not install. The appspec's file_exists_behavior wins.
    #[arg(long, value_enum, value_name = "BEHAVIOR")]
    pub file_exists_behavior: Option<FileExists>,
    /// The operating system the appspec targets (for validation).
    #[arg(long, value_enum, default_value_t = TargetOs::Linux)]
    pub os: TargetOs,
    /// Server-side encryption of the uploaded object: AES256 or aws:kms (bucket policies such
    /// as the pipeline's artifact bucket require aws:kms).
    #[arg(long, value_name = "ALGORITHM", value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    /// The KMS key for `--sse aws:kms` (default: the bucket's default key, else aws/s3).
    #[arg(long, value_name = "KEY_ID", requires = "sse")]
    pub sse_kms_key_id: Option<String>,
    /// Do not call RegisterApplicationRevision (CreateDeployment still records the revision
    /// in the deployment); for principals without that permission.
    #[arg(long)]
    pub no_register: bool,
    /// Print the deployment id and exit once the deployment is created.
    #[arg(long)]
    pub no_follow: bool,
    /// On Ctrl-C, stop the deployment (StopDeployment, no rollback requested) and follow it
    /// until it has stopped.
    /// Without this, Ctrl-C only stops following.
    #[arg(long)]
    pub stop_on_interrupt: bool,
    /// AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config and ~/.aws/credentials (default: AWS_PROFILE).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Seconds between polls while following.
    #[arg(long, hide = true, value_name = "SECONDS", default_value_t = 5.0)]
    pub poll_interval: f64,
    /// Upload in parts when the bundle is at least this many bytes.
    #[arg(long, hide = true, value_name = "BYTES", default_value_t = upload::DEFAULT_THRESHOLD)]
    pub multipart_threshold: u64,
    /// Size of one multipart part (at least 5 MiB, as S3 requires).
    #[arg(long, hide = true, value_name = "BYTES", default_value_t = upload::DEFAULT_PART_SIZE)]
    pub part_size: u64,
}

/// How a bundle is packed; CodeDeploy's `bundleType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BundleKind {
    Tgz,
    Tar,
    Zip,
}

impl BundleKind {
    fn sdk(self) -> BundleType {
        match self {
            BundleKind::Tgz => BundleType::TarGZip,
            BundleKind::Tar => BundleType::Tar,
            BundleKind::Zip => BundleType::Zip,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Tgz => "tgz",
            BundleKind::Tar => "tar",
            BundleKind::Zip => "zip",
        }
    }
}

/// `--file-exists-behavior` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum FileExists {
    Disallow,
    Overwrite,
    Retain,
}

impl FileExists {
    fn sdk(self) -> FileExistsBehavior {
        match self {
            FileExists::Disallow => FileExistsBehavior::Disallow,
            FileExists::Overwrite => FileExistsBehavior::Overwrite,
            FileExists::Retain => FileExistsBehavior::Retain,
        }
    }
}

/// What went wrong before or around following; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Bad options or an invalid bundle (exit 2).
    #[error("{0}")]
    Usage(String),
    /// AWS or configuration trouble (exit 3).
    #[error("{0}")]
    Aws(String),
    /// Ctrl-C before anything was deployed (exit 130).
    #[error("{0}")]
    Interrupted(String),
}

impl PushError {
    fn exit_code(&self) -> u8 {
        match self {
            PushError::Usage(_) => EXIT_USAGE,
            PushError::Aws(_) => EXIT_AWS,
            PushError::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }
}

/// An S3 bucket and key from `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    pub key: String,
}

impl S3Target {
    pub fn parse(url: &str) -> Result<Self, PushError> {
        let bad = |why: &str| {
            PushError::Usage(format!(
                "--s3-location {url}: {why}; expected s3://bucket/key, e.g. s3://my-bucket/app/release-42.tgz"
            ))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("no object key"))?;
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(bad(
                "no object key (the key names the bundle object, not a folder)",
            ));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// The whole command: returns the process exit code.
pub fn run(args: &DeployArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::errln!("codedeploy-agent deploy: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_AWS);
        }
    };
    match runtime.block_on(push(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            crate::errln!("codedeploy-agent deploy: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn push(args: &DeployArgs) -> Result<u8, PushError> {
    let target = S3Target::parse(&args.s3_location)?;
    if !(args.poll_interval.is_finite() && args.poll_interval > 0.0) {
        return Err(PushError::Usage(format!(
            "--poll-interval {}: must be a positive number of seconds",
            args.poll_interval
        )));
    }
    let tuning = upload::Tuning::new(args.multipart_threshold, args.part_size)?
        .with_encryption(args.sse.as_deref(), args.sse_kms_key_id.as_deref());

    // Everything local first: a bad bundle fails before any AWS call.
    let source = args.source.clone();
    let (kind, os, ignore_hidden) = (args.bundle_type, args.os.into(), args.ignore_hidden_files);
    let prepared =
        tokio::task::spawn_blocking(move || bundle::prepare(&source, kind, os, ignore_hidden))
            .await
            .map_err(|e| {
                PushError::Aws(format!("bundling {} failed: {e}", args.source.display()))
            })??;
    crate::outln!("{}", prepared.summary());

    let (codedeploy, s3) = clients(args).await?;
    let uploaded = upload::put(&s3, &target, prepared.path(), &tuning).await?;
    crate::outln!(
        "Uploaded s3://{}/{} ({} bytes, ETag {}{})",
        target.bucket,
        target.key,
        uploaded.size,
        uploaded.etag.as_deref().unwrap_or("none"),
        uploaded
            .version_id
            .as_deref()
            .map_or(String::new(), |v| format!(", version {v}"))
    );

    let revision = RevisionLocation::builder()
        .revision_type(RevisionLocationType::S3)
        .s3_location(
            S3Location::builder()
                .bucket(&target.bucket)
                .key(&target.key)
                .bundle_type(prepared.kind.sdk())
                .set_e_tag(uploaded.etag.clone())
                .set_version(uploaded.version_id.clone())
                .build(),
        )
        .build();

    // Once the upload has caught SIGINT it no longer ends the process by default: keep Ctrl-C
    // working until following takes it over.
    let created = tokio::select! {
        r = register_and_create(args, &codedeploy, revision) => r?,
        _ = tokio::signal::ctrl_c() => {
            return Err(PushError::Interrupted(format!(
                "interrupted before the deployment was confirmed; if CreateDeployment was already \
                 sent it may exist: check `aws deploy list-deployments --application-name {} \
                 --deployment-group-name {}`",
                args.application_name, args.deployment_group_name
            )));
        }
    };
    let id = created
        .deployment_id()
        .ok_or_else(|| PushError::Aws("CreateDeployment returned no deployment id".into()))?;
    if args.no_follow {
        crate::outln!("{id}");
        return Ok(EXIT_SUCCEEDED);
    }
    crate::outln!(
        "Created deployment {id} (application {}, deployment group {})",
        args.application_name,
        args.deployment_group_name
    );
    let options = follow::Options {
        interval: Duration::from_secs_f64(args.poll_interval),
        stop_on_interrupt: args.stop_on_interrupt,
    };
    follow::run(&codedeploy, id, &options).await
}

/// RegisterApplicationRevision (unless `--no-register`), then CreateDeployment.
async fn register_and_create(
    args: &DeployArgs,
    codedeploy: &aws_sdk_codedeploy::Client,
    revision: RevisionLocation,
) -> Result<aws_sdk_codedeploy::operation::create_deployment::CreateDeploymentOutput, PushError> {
    if args.no_register {
        crate::outln!("Not registering the revision (--no-register)");
    } else {
        codedeploy
            .register_application_revision()
            .application_name(&args.application_name)
            .revision(revision.clone())
            .set_description(args.description.clone())
            .send()
            .await
            .map_err(|e| {
                PushError::Aws(format!(
                    "RegisterApplicationRevision for application {} failed: {}. Check the \
                     application name and region, and that you may call \
                     codedeploy:RegisterApplicationRevision (or pass --no-register)",
                    args.application_name,
                    describe(&e)
                ))
            })?;
        crate::outln!(
            "Registered the revision with application {}",
            args.application_name
        );
    }

    codedeploy
        .create_deployment()
        .application_name(&args.application_name)
        .deployment_group_name(&args.deployment_group_name)
        .revision(revision)
        .set_deployment_config_name(args.deployment_config_name.clone())
        .set_description(args.description.clone())
        .set_file_exists_behavior(args.file_exists_behavior.map(FileExists::sdk))
        .send()
        .await
        .map_err(|e| {
            PushError::Aws(format!(
                "CreateDeployment for application {}, deployment group {} failed: {}",
                args.application_name,
                args.deployment_group_name,
                describe(&e)
            ))
        })
}

/// The CodeDeploy and S3 clients from the standard chain (environment, profile, SSO, IMDS),
/// with `--region` and `--profile` applied; `AWS_ENDPOINT_URL_CODEDEPLOY` and
/// `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) override the endpoints, as in every SDK.
async fn clients(
    args: &DeployArgs,
) -> Result<(aws_sdk_codedeploy::Client, aws_sdk_s3::Client), PushError> {
    let http = crate::revision::s3::http_client(None)
        .map_err(|e| PushError::Aws(format!("cannot set up the HTTPS client: {e}")))?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &args.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &args.profile {
        loader = loader.profile_name(profile);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(PushError::Aws(
            "no AWS region is configured: pass --region, set AWS_REGION, or set a region in \
             the AWS profile"
                .into(),
        ));
    }
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
    let s3_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
    if s3_endpoint
        .as_deref()
        .is_some_and(crate::revision::s3::host_is_ip_or_localhost)
    {
        // `bucket.127.0.0.1` cannot resolve: local S3 stand-ins need path-style addressing.
        s3 = s3.force_path_style(true);
    }
    Ok((
        aws_sdk_codedeploy::Client::new(&sdk),
        aws_sdk_s3::Client::from_conf(s3.build()),
    ))
}

/// An SDK error in one line: `Code: message` for a service error, else the chain of causes
/// with the HTTP status when there was a response.
pub(crate) fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = e
        && let Some(code) = service.err().code()
    {
        return match service.err().message() {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    let mut text = crate::revision::s3::error_chain(e);
    if let Some(response) = e.raw_response() {
        text.push_str(&format!(" (HTTP {})", response.status().as_u16()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations() {
        assert_eq!(
            S3Target::parse("s3://b/app/r.tgz").expect("valid"),
            S3Target {
                bucket: "b".into(),
                key: "app/r.tgz".into()
            }
        );
        for bad in ["b/k", "s3://b", "s3://b/", "s3:///k", "s3://b/dir/"] {
            let e = S3Target::parse(bad).expect_err(bad);
            assert!(matches!(e, PushError::Usage(_)), "{bad}: {e}");
            assert!(e.to_string().contains("expected s3://bucket/key"), "{e}");
        }
    }
}
