//! Local mode (`codedeploy-local`, `codedeploy-agent local`): validate the options exactly as
//! the AWS developer utility does (agent-behaviour.md §7), synthesise a `TEXT/JSON` deployment
//! spec, and run every lifecycle event through the same executor the daemon uses.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{Value, json};

use crate::appspec::LifecycleEvent;
use crate::cli::LocalArgs;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::deploy::executor::{CommandFailure, EngineSettings, Executor, HookMapping, Progress};
use crate::deploy::layout::DeploymentRoot;
use crate::revision::StandaloneFetcher;

/// A problem with the options, printed as `ERROR: <message>` (exit 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LocalValidationError(pub String);

const VALID_TYPES: [&str; 4] = ["tgz", "tar", "zip", "directory"];

/// Events that use the last successful revision: the only ones allowed before DownloadBundle.
const PREVIOUS_REVISION_EVENTS: [&str; 3] =
    ["BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop"];

/// Events that use the new revision, except BeforeInstall (which may precede Install).
const NEW_REVISION_EVENTS: [&str; 5] = [
    "AfterInstall",
    "ApplicationStart",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
    "ValidateService",
];

/// The environment variable holding a GitHub token for local GitHub revisions (as v2's
/// `deploy-local` reads it); `--github-token` wins.
pub const GITHUB_TOKEN_ENV: &str = "CODEDEPLOY_GITHUB_TOKEN";

/// Where the bundle comes from, as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 {
        bucket: String,
        key: String,
        version: Option<String>,
        etag: Option<String>,
    },
    GitHub {
        account: String,
        repository: String,
        commit: String,
    },
}

/// The validated options of one local run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRun {
    pub location_text: String,
    pub location: Location,
    pub bundle_type: String,
    pub file_exists_behavior: String,
    pub deployment_group_id: String,
    pub deployment_group_name: String,
    pub application_name: String,
    pub appspec_filename: Option<String>,
    /// The events as given with `--events`, if any.
    pub events: Option<Vec<String>>,
}

/// Validates the options in the AWS order (§7 "Validation").
pub fn validate(args: &LocalArgs, cwd: &Path) -> Result<LocalRun, LocalValidationError> {
    let location_text = args
        .bundle_location
        .clone()
        .unwrap_or_else(|| cwd.display().to_string());
    let err = |m: String| Err(LocalValidationError(m));
    let t = args.bundle_type.as_str();
    if !VALID_TYPES.contains(&t) {
        return err(format!(
            "type {t} is not a valid type. Must be one of tgz,tar,zip,directory"
        ));
    }
    let l = &location_text;
    let scheme = scheme_of(l);
    if scheme.as_deref() == Some("http") {
        return err(format!(
            "location {l} cannot be http, only encrypted (https) url endpoints supported"
        ));
    }
    let location = match scheme.as_deref() {
        Some("s3") => parse_s3(l)?,
        Some("https") => parse_github(l)?,
        Some("file") => Location::Local(PathBuf::from(&l["file://".len()..])),
        Some(_) => {
            return err(format!(
                "unknown location {l} cannot be determined to be S3, Github, or a local file / directory"
            ));
        }
        None => Location::Local(PathBuf::from(l)),
    };
    if let Location::Local(path) = &location {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            cwd.join(path)
        };
        if !path.exists() {
            return err(format!(
                "location {l} is specified as a file or directory which does not exist"
            ));
        }
        if t == "directory" && path.is_file() {
            return err(format!(
                "location {l} is specified with type directory but it is a file"
            ));
        }
        if t != "directory" && path.is_dir() {
            return err(format!(
                "location {l} is specified as a compressed local file but it is a directory"
            ));
        }
        if t == "directory" {
            match &args.appspec_filename {
                Some(name) if !path.join(name).exists() => {
                    return err(format!(
                        "Expecting appspec file at location {l}/{name} but it is not found there. \
                         Please either run the CLI from within a directory containing the {name} \
                         file or specify a bundle location containing an {name} file in its root \
                         directory"
                    ));
                }
                None if !path.join("appspec.yml").exists()
                    && !path.join("appspec.yaml").exists() =>
                {
                    return err(format!(
                        "Expecting appspec file at location {l}/appspec.yml or {l}/appspec.yaml but \
                         it is not found there. Please either run the CLI from within a directory \
                         containing the appspec.yml or appspec.yaml file or specify a bundle \
                         location containing an appspec.yml or appspec.yaml file in its root directory"
                    ));
                }
                _ => {}
            }
        }
    }
    let events: Option<Vec<String>> = args
        .events
        .as_ref()
        .map(|e| e.split(',').map(str::to_owned).collect());
    if let Some(events) = &events {
        let before = |stop: &str| -> Vec<&str> {
            events
                .iter()
                .map(String::as_str)
                .take_while(|e| *e != stop)
                .collect()
        };
        if events.iter().any(|e| e == "DownloadBundle") {
            let prior = before("DownloadBundle");
            if NEW_REVISION_EVENTS
                .iter()
                .chain(["BeforeInstall", "Install"].iter())
                .any(|e| prior.contains(e))
            {
                return err(format!(
                    "The only events that can be specified before DownloadBundle are {}. Please fix \
                     the order of your specified events: {}",
                    PREVIOUS_REVISION_EVENTS.join(","),
                    args.events.as_deref().unwrap_or_default()
                ));
            }
        }
        if events.iter().any(|e| e == "Install") {
            let prior = before("Install");
            if NEW_REVISION_EVENTS.iter().any(|e| prior.contains(e)) {
                return err(format!(
                    "The only events that can be specified before Install are {},DownloadBundle,BeforeInstall. \
                     Please fix the order of your specified events: {}",
                    PREVIOUS_REVISION_EVENTS.join(","),
                    args.events.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    let location = match location {
        Location::Local(p) if p.is_relative() => Location::Local(cwd.join(p)),
        other => other,
    };
    Ok(LocalRun {
        application_name: args
            .application_name
            .clone()
            .unwrap_or_else(|| location_text.clone()),
        location_text,
        location,
        bundle_type: t.to_owned(),
        file_exists_behavior: args.file_exists_behavior.clone(),
        deployment_group_id: args.deployment_group.clone(),
        deployment_group_name: args.deployment_group_name.clone(),
        appspec_filename: args.appspec_filename.clone(),
        events,
    })
}

fn scheme_of(location: &str) -> Option<String> {
    let (scheme, _) = location.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| scheme.to_ascii_lowercase())
}

fn parse_s3(l: &str) -> Result<Location, LocalValidationError> {
    let rest = &l["s3://".len()..];
    let bad = || {
        LocalValidationError(format!(
            "s3 location {l} not in the expected format of 's3://bucket/key'"
        ))
    };
    let (bucket, path) = rest.split_once('/').ok_or_else(bad)?;
    let (key, query) = match path.split_once('?') {
        Some((k, q)) => (k, Some(q)),
        None => (path, None),
    };
    if bucket.is_empty() || key.is_empty() {
        return Err(bad());
    }
    let mut version = None;
    let mut etag = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "versionId" => version = Some(percent_decode(v)),
            "etag" => etag = Some(percent_decode(v)),
            _ => {}
        }
    }
    Ok(Location::S3 {
        bucket: bucket.into(),
        key: percent_decode(key),
        version,
        etag,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_github(l: &str) -> Result<Location, LocalValidationError> {
    let bad = || {
        LocalValidationError(format!(
            "github location {l} not in the expected format of 'https://github.com/<owner>/<repository_name>'(assumes HEAD commit) or 'https://github.com/<owner>/<repository_name>/tree/<ref>' or 'https://github.com/<owner>/<repository_name>/commit/<sha>' or 'https://api.github.com/repos/<owner>/<repository_name>/tarball/<commit>' or 'https://api.github.com/repos/<owner>/<repository_name>/zipball/<commit>'"
        ))
    };
    let rest = &l["https://".len()..];
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !host.ends_with("github.com") {
        return Err(LocalValidationError(format!(
            "unknown location {l} cannot be determined to be S3, Github, or a local file / directory"
        )));
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    if host == "github.com" && parts.len() >= 2 && !parts[0].is_empty() && !parts[1].is_empty() {
        // github.com/<owner>/<repo>[.git][/tree/<ref>|/commit/<sha>] (v2's forms); a ref
        // may contain `/` (`tree/release/1.2`).
        let repository = parts[1].strip_suffix(".git").unwrap_or(parts[1]);
        let commit = match parts.get(2..) {
            None | Some([] | [""]) => "HEAD".to_owned(),
            Some([kind, reference @ ..])
                if (*kind == "tree" || *kind == "commit")
                    && !reference.is_empty()
                    && reference.iter().all(|p| !p.is_empty()) =>
            {
                if *kind == "commit" && reference.len() != 1 {
                    return Err(bad());
                }
                reference.join("/")
            }
            Some(_) => return Err(bad()),
        };
        if repository.is_empty() {
            return Err(bad());
        }
        return Ok(Location::GitHub {
            account: parts[0].into(),
            repository: repository.into(),
            commit,
        });
    }
    // api.github.com/repos/<owner>/<repo>/{tarball,zipball}/<ref>, the ref possibly with `/`.
    if parts.len() >= 5
        && parts[0] == "repos"
        && (parts[3] == "tarball" || parts[3] == "zipball")
        && parts[1..].iter().all(|p| !p.is_empty())
    {
        return Ok(Location::GitHub {
            account: parts[1].into(),
            repository: parts[2].into(),
            commit: parts[4..].join("/"),
        });
    }
    Err(bad())
}

/// The events to run, in order: the eleven defaults when none were given; otherwise the given
/// list with DownloadBundle and Install prepended when missing, swapped when Install would come
/// before DownloadBundle.
pub fn event_sequence(events: Option<&[String]>) -> Vec<String> {
    let given: Vec<String> = match events {
        None | Some([]) => LifecycleEvent::DEFAULT_ORDER
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        Some(list) => list.to_vec(),
    };
    let mut out: Vec<String> = ["DownloadBundle", "Install"]
        .iter()
        .filter(|r| !given.iter().any(|e| e == *r))
        .map(|s| (*s).to_owned())
        .collect();
    out.extend(given);
    let download = out.iter().position(|e| e == "DownloadBundle");
    let install = out.iter().position(|e| e == "Install");
    if let (Some(d), Some(i)) = (download, install)
        && i < d
    {
        out.swap(d, i);
    }
    out
}

/// `AllPossibleLifecycleEvents`: the eleven defaults plus the given events, without duplicates.
pub fn all_possible_events(events: Option<&[String]>) -> Vec<String> {
    let mut out: Vec<String> = LifecycleEvent::DEFAULT_ORDER
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    for e in events.unwrap_or_default() {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

/// Hook mapping of local mode: every possible event except DownloadBundle and Install maps to
/// itself, so custom events named with `--events` can run.
pub fn hook_events(events: Option<&[String]>) -> BTreeSet<String> {
    all_possible_events(events)
        .into_iter()
        .filter(|e| e != "DownloadBundle" && e != "Install")
        .collect()
}

/// A random deployment id `d-XXXXXXXXX-local` (9 chars from A-Z and 0-9).
pub fn random_deployment_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut seed = [0u8; 9];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (nanos >> (i * 7)) as u8 ^ (std::process::id() >> i) as u8;
        }
    }
    let id: String = seed
        .iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect();
    format!("d-{id}-local")
}

/// The `TEXT/JSON` spec payload for this run (§7 "Execution").
pub fn spec_json(run: &LocalRun, deployment_id: &str) -> String {
    let revision = match &run.location {
        Location::S3 {
            bucket,
            key,
            version,
            etag,
        } => {
            let mut s3 = json!({"Bucket": bucket, "Key": key, "BundleType": run.bundle_type});
            if let Some(v) = version {
                s3["Version"] = json!(v);
            }
            if let Some(e) = etag {
                s3["ETag"] = json!(e);
            }
            json!({"RevisionType": "S3", "S3Revision": s3})
        }
        Location::GitHub {
            account,
            repository,
            commit,
        } => {
            let bundle_type = if run.bundle_type == "tar" || run.bundle_type == "zip" {
                run.bundle_type.as_str()
            } else {
                "zip"
            };
            json!({"RevisionType": "GitHub", "GitHubRevision": {
                "Account": account, "Repository": repository, "CommitId": commit, "BundleType": bundle_type}})
        }
        Location::Local(path) => {
            let kind = if run.bundle_type == "directory" {
                "Local Directory"
            } else {
                "Local File"
            };
            json!({"RevisionType": kind, "LocalRevision": {
                "Location": path.display().to_string(), "BundleType": run.bundle_type}})
        }
    };
    let value: Value = json!({
        "ApplicationId": run.location_text,
        "ApplicationName": run.application_name,
        "AppSpecFilename": run.appspec_filename.clone().unwrap_or_else(|| "appspec.yml".into()),
        "DeploymentGroupId": run.deployment_group_id,
        "DeploymentGroupName": run.deployment_group_name,
        "DeploymentId": deployment_id,
        "AgentActionOverrides": {"AgentOverrides": {"FileExistsBehavior": run.file_exists_behavior}},
        "Revision": revision,
        "AllPossibleLifecycleEvents": all_possible_events(run.events.as_deref()),
    });
    value.to_string()
}

// ---------------------------------------------------------------------------------------------
// Running a local deployment.

/// Loads the configuration a local run uses: `-c` if given (it must exist), else the system
/// file if present, else built-in per-user defaults.
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, Option<String>), String> {
    match explicit {
        Some(path) => {
            if !path.is_file() || std::fs::File::open(path).is_err() {
                return Err(format!(
                    "configuration file {} does not exist or is not readable",
                    path.display()
                ));
            }
            Config::load(path)
                .map(|c| (c, None))
                .map_err(|e| e.to_string())
        }
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            if default.is_file() && std::fs::File::open(default).is_ok() {
                return Config::load(default)
                    .map(|c| (c, None))
                    .map_err(|e| e.to_string());
            }
            let config = Config::user_defaults();
            let note = format!(
                "No agent configuration file at {DEFAULT_CONFIG_PATH}; using built-in defaults \
                 with the deployment root {}",
                config.root_dir.display()
            );
            Ok((config, Some(note)))
        }
    }
}

/// Prints the appspec's warnings (once, on stderr) and where its files go, from the revision
/// just downloaded into `deployment_dir`; the executor logs the same warnings once.
fn report_appspec(deployment_dir: &Path, appspec_filename: Option<&str>) {
    let archive = deployment_dir.join("deployment-archive");
    let Some(path) = [
        appspec_filename.unwrap_or("appspec.yml"),
        "appspec.yml",
        "appspec.yaml",
    ]
    .iter()
    .map(|n| archive.join(n))
    .find(|p| p.is_file()) else {
        return;
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let Ok(parsed) = crate::appspec::parse(&text, crate::appspec::Os::Linux) else {
        return; // Install reports the errors.
    };
    for w in &parsed.warnings {
        match w.position {
            Some(p) => crate::errln!("warning: {name}:{p}: {}", w.message),
            None => crate::errln!("warning: {name}: {}", w.message),
        }
    }
    let mut destinations: Vec<&str> = parsed
        .spec
        .files
        .iter()
        .map(|f| f.destination.as_str())
        .collect();
    destinations.dedup();
    if destinations.is_empty() {
        crate::outln!(
            "Files: the appspec has no files section; the revision stays in {}",
            archive.display()
        );
    } else {
        crate::outln!("Files go to: {}", destinations.join(", "));
    }
}

/// Sends the agent's own log lines to `<log_dir>/codedeploy-local.log` when that is writable,
/// and returns that file.
fn init_logging(config: &Config) -> Option<PathBuf> {
    let file = config.log_dir.join("codedeploy-local.log");
    if let Err(e) = crate::logging::init_with(&crate::logging::LogOptions {
        log_dir: &config.log_dir,
        file_name: "codedeploy-local.log",
        program: &config.program_name,
        verbose: config.verbose,
        console: None,
        rotation: config.log_rotation,
        journal: false,
        hook_output_to_journal: false,
    }) {
        crate::errln!("warning: {e}; continuing without a log file");
        return None;
    }
    Some(file)
}

/// Shows how much of a remote bundle has arrived, by watching `bundle.tar` grow (a local
/// bundle is a symlink there and is not shown).
struct DownloadWatcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DownloadWatcher {
    fn start(file: PathBuf) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut shown = false;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::symlink_metadata(&file)
                    && meta.is_file()
                    && meta.len() >= 1 << 20
                {
                    crate::out!("\r  downloading: {} MiB", meta.len() >> 20);

                    shown = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            if shown {
                crate::outln!();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DownloadWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fmt_duration(d: std::time::Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// `codedeploy-local`: runs the whole deployment and returns the exit code (0 or 1).
pub fn run(args: &LocalArgs) -> ExitCode {
    if args.version {
        crate::outln!("{}", crate::VERSION);
        return ExitCode::SUCCESS;
    }
    let fail = |message: &str| {
        // A location may be a presigned URL: its signature and credentials are not printed.
        crate::outln!("ERROR: {}", crate::logging::redact(message));
        ExitCode::from(1)
    };
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return fail(&format!("cannot read the current directory: {e}")),
    };
    let (config, note) = match load_config(args.agent_configuration_file.as_deref()) {
        Ok(c) => c,
        Err(message) => return fail(&message),
    };
    let run = match validate(args, &cwd) {
        Ok(run) => run,
        Err(e) => return fail(&e.0),
    };
    let log_file = init_logging(&config);
    let mut config = config;
    if config.disable_core_dumps {
        config
            .warnings
            .extend(crate::hardening::disable_core_dumps());
    }
    if config.restrict_log_dir_permissions
        && let Err(e) = crate::hardening::restrict_log_dir(&config.log_dir)
    {
        config.warnings.push(format!(
            "restrict_log_dir_permissions: cannot tighten {}: {e}",
            config.log_dir.display()
        ));
    }
    config.report_warnings(false);
    if let Err(message) = crate::deploy::layout::check_group_name(
        &run.deployment_group_id,
        &config.ongoing_deployment_tracking,
    ) {
        return fail(&message);
    }
    let tty = std::io::stdout().is_terminal();
    // Lines that say what happened are printed on a terminal and on a pipe alike.
    if let Some(note) = note {
        crate::outln!("{note}");
        tracing::info!("{note}");
    }
    if let Some(log_file) = &log_file {
        crate::outln!("Agent log: {}", log_file.display());
    }

    let deployment_id = random_deployment_id();
    let root = DeploymentRoot::new(&config.root_dir, &config.program_name);
    let deployment_dir = root.deployment_dir(&run.deployment_group_id, &deployment_id);
    crate::outln!(
        "Starting to execute deployment from within folder {}",
        deployment_dir.display()
    );
    let spec = match crate::spec::parse_envelope(
        Some("TEXT/JSON"),
        &spec_json(&run, &deployment_id),
        true,
    ) {
        Ok(spec) => spec,
        Err(e) => return fail(&e.message),
    };
    let mapping = HookMapping::identity(hook_events(run.events.as_deref()));
    let mut settings = EngineSettings::from_config(&config, &root);
    // A local run has no restart deployments: no archive digest to record for them.
    settings.archive_reuse = false;
    // Nothing would continue the deployment after a reboot: scripts are not offered one.
    settings.hooks.reboot_requests = false;
    // S3 and GitHub locations get their network clients (and a runtime) here.
    let github_token = args
        .github_token
        .clone()
        .or_else(|| std::env::var(GITHUB_TOKEN_ENV).ok())
        .filter(|t| !t.trim().is_empty());
    let fetcher = match StandaloneFetcher::for_revision(&config, &spec.revision) {
        Ok(fetcher) => fetcher.with_github_token(github_token),
        Err(e) => return fail(&e.to_string()),
    };
    let executor = Executor {
        root,
        settings,
        fetcher: &fetcher,
    };
    // One deployment of a group at a time on this host, codedeploy-local and the daemon
    // alike: a second one waits (its hooks have timeouts, so the wait ends).
    let _group_lock =
        match executor
            .root
            .lock_group(&run.deployment_group_id, &deployment_id, &mut |message| {
                crate::outln!("{message}");
                tracing::info!("{message}");
            }) {
            Ok(lock) => lock,
            Err(e) => {
                return fail(&format!(
                    "cannot take the deployment lock {} of group {}: {e}",
                    executor
                        .root
                        .group_lock_file(&run.deployment_group_id)
                        .display(),
                    run.deployment_group_id
                ));
            }
        };
    let started = Instant::now();
    let scripts_log = deployment_dir.join("logs/scripts.log");
    let see_log = || {
        crate::outln!(
            "See the deployment log at {} for more details",
            scripts_log.display()
        )
    };

    for event in event_sequence(run.events.as_deref()) {
        let event_started = Instant::now();
        let mut ran_scripts = false;
        let mut terminal = |p: Progress| {
            if let Progress::EventStarted { .. } = p {
                ran_scripts = true;
            }
            if !tty {
                return;
            }
            match p {
                // A running count while a large bundle unpacks.
                Progress::Unpacking { files, bytes } if files >= 1000 => {
                    crate::out!("\r  unpacking: {files} files, {} MiB", bytes >> 20);
                }
                // A progress bar for installs large enough to take a while.
                Progress::Copying { done, total } if total >= 2000 => {
                    let width = 30;
                    let filled = done * width / total.max(1);
                    crate::out!(
                        "\r  copying [{}{}] {done}/{total}",
                        "#".repeat(filled),
                        " ".repeat(width - filled)
                    );
                    if done == total {
                        crate::outln!();
                    }
                }
                Progress::Downloaded {
                    files,
                    bytes,
                    elapsed,
                } if files > 0 => {
                    if files >= 1000 {
                        crate::outln!();
                    }
                    crate::outln!(
                        "  bundle unpacked: {files} files, {} KiB in {}",
                        bytes / 1024,
                        fmt_duration(elapsed)
                    );
                }
                _ => {}
            }
        };
        let mut progress = |p: Progress| {
            // What Install did is printed on a pipe too.
            if let Progress::Installed { summary, elapsed } = &p {
                let (summary, elapsed) = (summary, *elapsed);
                crate::outln!(
                    "  installed: {} files copied, {} directories created, {} permissions set, {} previous files removed in {}",
                    summary.copied,
                    summary.directories,
                    summary.permissions,
                    summary.removed,
                    fmt_duration(elapsed)
                );
            }
            terminal(p);
        };
        if tty {
            crate::outln!("==> {event}");
        }
        let watcher = (tty && event == "DownloadBundle")
            .then(|| DownloadWatcher::start(deployment_dir.join("bundle.tar")));
        let result = executor.execute(&event, &spec, &mapping, &mut progress);
        drop(watcher);
        if event == "DownloadBundle" && result.is_ok() {
            report_appspec(&deployment_dir, run.appspec_filename.as_deref());
        }
        match result {
            Ok(()) => {
                if tty {
                    let what = if event == "DownloadBundle" || event == "Install" || ran_scripts {
                        "done"
                    } else {
                        "no scripts"
                    };
                    crate::outln!("  {what} in {}", fmt_duration(event_started.elapsed()));
                }
            }
            Err(failure) => return report_failure(&failure, &deployment_dir, &see_log),
        }
    }
    see_log();
    crate::outln!(
        "Deployment {deployment_id} of group {} finished in {}",
        spec.deployment_group_id,
        fmt_duration(started.elapsed())
    );
    crate::outln!("AppSpec file valid. Local deployment successful");
    ExitCode::SUCCESS
}

fn report_failure(failure: &CommandFailure, deployment_dir: &Path, see_log: &dyn Fn()) -> ExitCode {
    if failure.is_script_error() {
        crate::outln!(
            "Your local deployment failed while trying to execute your script at {}/deployment-archive/{}",
            deployment_dir.display(),
            failure.script_name
        );
        crate::outln!("{}", failure.message);
        if !failure.log.is_empty() {
            crate::outln!("Last output of the failing event:");
            for line in failure.log.lines() {
                crate::outln!("  {line}");
            }
        }
        see_log();
    } else {
        see_log();
        crate::outln!("ERROR: {}", failure.message);
        // The first appspec problem is the message itself; the rest, and every positioned
        // explanation (unknown lifecycle events), follow it.
        let repeats =
            |d: &String| *d == failure.message || d.ends_with(&format!(": {}", failure.message));
        for detail in failure.details.iter().filter(|d| !repeats(d)) {
            crate::outln!("  {detail}");
        }
    }
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LocalArgs {
        let mut argv = vec!["codedeploy-local"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::parse(argv.iter().map(Into::into).collect()).expect("parses");
        match cli.command {
            crate::cli::Command::Local(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("appspec.yml"), "version: 0.0\nos: linux\n").expect("write");
        dir
    }

    fn msg(extra: &[&str], cwd: &Path) -> String {
        validate(&args(extra), cwd).expect_err("invalid").0
    }

    #[test]
    fn validation_messages_in_aws_order() {
        let b = bundle();
        let cwd = b.path();
        assert_eq!(
            msg(&["-t", "rar"], cwd),
            "type rar is not a valid type. Must be one of tgz,tar,zip,directory"
        );
        assert_eq!(
            msg(&["-l", "http://x/y"], cwd),
            "location http://x/y cannot be http, only encrypted (https) url endpoints supported"
        );
        assert_eq!(
            msg(&["-l", "/no/such"], cwd),
            "location /no/such is specified as a file or directory which does not exist"
        );
        let file = cwd.join("appspec.yml");
        let f = file.to_str().expect("utf8");
        assert_eq!(
            msg(&["-l", f], cwd),
            format!("location {f} is specified with type directory but it is a file")
        );
        let d = cwd.to_str().expect("utf8");
        assert_eq!(
            msg(&["-l", d, "-t", "zip"], cwd),
            format!("location {d} is specified as a compressed local file but it is a directory")
        );
        assert!(
            msg(&["-l", d, "-A", "other.yml"], cwd).starts_with(&format!(
                "Expecting appspec file at location {d}/other.yml but it is not found there."
            ))
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let e = empty.path().to_str().expect("utf8");
        assert!(msg(&["-l", e], cwd).starts_with(&format!(
            "Expecting appspec file at location {e}/appspec.yml or {e}/appspec.yaml but it is not found there."
        )));
        assert_eq!(
            msg(&["-e", "Install,DownloadBundle"], cwd),
            "The only events that can be specified before DownloadBundle are BeforeBlockTraffic,AfterBlockTraffic,ApplicationStop. Please fix the order of your specified events: Install,DownloadBundle"
        );
        assert_eq!(
            msg(&["-e", "ApplicationStart,Install"], cwd),
            "The only events that can be specified before Install are BeforeBlockTraffic,AfterBlockTraffic,ApplicationStop,DownloadBundle,BeforeInstall. Please fix the order of your specified events: ApplicationStart,Install"
        );
    }

    #[test]
    fn defaults_and_locations() {
        let b = bundle();
        let run = validate(&args(&[]), b.path()).expect("valid");
        assert_eq!(run.location, Location::Local(b.path().to_path_buf()));
        assert_eq!(run.deployment_group_id, "default-local-deployment-group");
        assert_eq!(run.deployment_group_name, "LocalFleet");
        assert_eq!(run.application_name, b.path().display().to_string());
        assert_eq!(run.file_exists_behavior, "DISALLOW");
        let run = validate(
            &args(&[
                "-l",
                "s3://bkt/dir/app.zip?versionId=v1&etag=abc",
                "-t",
                "zip",
            ]),
            b.path(),
        )
        .expect("s3");
        assert_eq!(
            run.location,
            Location::S3 {
                bucket: "bkt".into(),
                key: "dir/app.zip".into(),
                version: Some("v1".into()),
                etag: Some("abc".into())
            }
        );
        let run = validate(
            &args(&["-l", "https://github.com/owner/repo", "-t", "zip"]),
            b.path(),
        )
        .expect("gh");
        assert_eq!(
            run.location,
            Location::GitHub {
                account: "owner".into(),
                repository: "repo".into(),
                commit: "HEAD".into()
            }
        );
        let run = validate(
            &args(&[
                "-l",
                "https://api.github.com/repos/o/r/tarball/abc123",
                "-t",
                "tar",
            ]),
            b.path(),
        )
        .expect("gh api");
        assert_eq!(
            run.location,
            Location::GitHub {
                account: "o".into(),
                repository: "r".into(),
                commit: "abc123".into()
            }
        );
    }

    #[test]
    fn event_ordering_rules() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(event_sequence(None).len(), 11);
        // Install is prepended, then swapped behind DownloadBundle (§7).
        assert_eq!(
            event_sequence(Some(&s(&["DownloadBundle", "ApplicationStart"]))),
            s(&["DownloadBundle", "Install", "ApplicationStart"])
        );
        assert_eq!(
            event_sequence(Some(&s(&["ApplicationStart"]))),
            s(&["DownloadBundle", "Install", "ApplicationStart"])
        );
        assert_eq!(
            event_sequence(Some(&s(&["Install", "DownloadBundle"]))),
            s(&["DownloadBundle", "Install"])
        );
        let all = all_possible_events(Some(&s(&["Custom1", "ApplicationStart"])));
        assert_eq!(all.len(), 12);
        assert_eq!(all.last().map(String::as_str), Some("Custom1"));
        let hooks = hook_events(Some(&s(&["Custom1"])));
        assert!(hooks.contains("Custom1") && !hooks.contains("Install") && hooks.len() == 10);
    }

    #[test]
    fn random_ids_have_the_aws_shape() {
        let id = random_deployment_id();
        assert_eq!(id.len(), "d-XXXXXXXXX-local".len());
        assert!(id.starts_with("d-") && id.ends_with("-local"));
        assert!(
            id[2..11]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn spec_json_round_trips_through_the_spec_parser() {
        let b = bundle();
        let run = validate(&args(&["-b", "overwrite"]), b.path()).expect("valid");
        let json = spec_json(&run, "d-ABCDEFGHI-local");
        let spec = crate::spec::parse_envelope(Some("TEXT/JSON"), &json, true).expect("parses");
        assert_eq!(spec.deployment_id, "d-ABCDEFGHI-local");
        assert_eq!(spec.file_exists_behavior, "OVERWRITE");
        assert_eq!(
            spec.all_possible_lifecycle_events.map(|v| v.len()),
            Some(11)
        );
    }
}
