//! The one place that knows what each command means (agent-behaviour.md §2): `DownloadBundle`,
//! `Install` and every hook event, which revision each hook uses (§2.2), noop determination
//! (§2.4), the `AllPossibleLifecycleEvents` checks (§5.10) and the mapping of every failure to
//! the diagnostics payload the service expects (§5.8). Local mode and the daemon both call only
//! [`Executor::execute`] and [`Executor::is_noop`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::appspec::{self, AppSpec, LifecycleEvent, Os};
use crate::config::Config;
use crate::deploy::hooks::{self, EventRun, HookEnv, HookError, HookOptions};
use crate::deploy::install::{self, InstallRequest};
use crate::deploy::layout::DeploymentRoot;
use crate::deploy::reuse;
use crate::revision::archive::{self, BundleType, UnpackOptions};
use crate::revision::{Fetch, Fetched};
use crate::spec::{DeploymentSpec, Revision};

/// `error_code` for failures that are not a script's (§5.8).
pub const UNKNOWN_ERROR: u8 = 5;

/// A command failed. Serialises to the `Diagnostics.Payload` of `PutHostCommandComplete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandFailure {
    pub error_code: u8,
    pub script_name: String,
    pub message: String,
    pub log: String,
    /// Further problems found alongside `message` (every appspec problem, with positions), for
    /// local output and logs; not sent to the service.
    #[serde(skip)]
    pub details: Vec<String>,
}

impl CommandFailure {
    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            error_code: UNKNOWN_ERROR,
            script_name: String::new(),
            message: message.into(),
            log: String::new(),
            details: Vec::new(),
        }
    }

    /// True for a hook script failure (codes 1–4 and 6), as opposed to an agent-side failure.
    pub fn is_script_error(&self) -> bool {
        self.error_code != UNKNOWN_ERROR
    }

    /// The JSON payload, keys in the AWS order: error_code, script_name, message, log.
    pub fn payload_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error_code":"Unknown","script_name":"","message":"Attempting minimal diagnostics","log":"Exception JSON::GeneratorError occured"}"#.into()
        })
    }
}

impl From<HookError> for CommandFailure {
    fn from(e: HookError) -> Self {
        match e {
            HookError::Script(s) => Self {
                error_code: s.code.as_u8(),
                script_name: s.script_name,
                message: s.message,
                log: s.log,
                details: Vec::new(),
            },
            other => Self::unknown(other.to_string()),
        }
    }
}

/// The payload of a successful command.
pub const SUCCESS_PAYLOAD: &str =
    r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#;

/// The payload of a successful `command`: [`SUCCESS_PAYLOAD`], except for the `DownloadBundle`
/// of a restart deployment (one with `ReuseArchiveFromDeploymentId`), whose message carries
/// v2's note of where the bundle came from (`Succeeded: BundleSource=archive-reuse` or
/// `=downloaded`), which the service counts.
pub fn success_payload(root: &DeploymentRoot, command: &str, spec: &DeploymentSpec) -> String {
    if command != "DownloadBundle" || spec.reuse_archive_from_deployment_id.is_none() {
        return SUCCESS_PAYLOAD.into();
    }
    let dir = root.deployment_dir(&spec.deployment_group_id, &spec.deployment_id);
    match reuse::recorded_source(&dir) {
        Some(source) => format!(
            r#"{{"error_code":0,"script_name":"","message":"Succeeded: BundleSource={}","log":""}}"#,
            source.as_str()
        ),
        None => SUCCESS_PAYLOAD.into(),
    }
}

/// Which lifecycle events each command runs. `DownloadBundle` and `Install` are built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookMapping(BTreeMap<String, Vec<String>>);

impl HookMapping {
    /// The daemon's mapping: each of the nine hook events runs itself.
    pub fn default_mapping() -> Self {
        Self(
            LifecycleEvent::DEFAULT_ORDER
                .iter()
                .filter(|e| !matches!(e, LifecycleEvent::DownloadBundle | LifecycleEvent::Install))
                .map(|e| (e.as_str().to_owned(), vec![e.as_str().to_owned()]))
                .collect(),
        )
    }

    /// Each given event runs itself (local mode: defaults plus `--events`).
    pub fn identity(events: impl IntoIterator<Item = String>) -> Self {
        Self(events.into_iter().map(|e| (e.clone(), vec![e])).collect())
    }

    pub fn events(&self, command: &str) -> Option<&[String]> {
        self.0.get(command).map(Vec::as_slice)
    }

    pub fn commands(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

/// How the engine behaves, derived from the agent configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub max_revisions: u32,
    /// The tracking directory's name (`ongoing_deployment_tracking`): no group may use it.
    pub tracking_dir_name: String,
    /// `restrict_agent_dir_permissions`.
    pub restrict_agent_dirs: bool,
    /// `reject_unsafe_permissions_in_bundle` (appspec `mode:` values; the unpacker checks
    /// the entries).
    pub reject_unsafe_modes: bool,
    /// `reject_unconfined_selinux_in_bundle`.
    pub reject_unconfined_selinux: bool,
    pub unpack: UnpackOptions,
    pub hooks: HookOptions,
    pub os: Os,
    /// `enable_archive_reuse`: honour `ReuseArchiveFromDeploymentId` and record each
    /// download's digest for it ([`reuse`]).
    pub archive_reuse: bool,
    /// `hook_reboot_command`: what the daemon runs when a hook asks for a reboot.
    pub reboot_command: String,
}

impl EngineSettings {
    pub fn from_config(config: &Config, root: &DeploymentRoot) -> Self {
        Self {
            max_revisions: config.max_revisions,
            tracking_dir_name: config.ongoing_deployment_tracking.clone(),
            restrict_agent_dirs: config.restrict_agent_dir_permissions,
            reject_unsafe_modes: config.reject_unsafe_permissions_in_bundle,
            reject_unconfined_selinux: config.reject_unconfined_selinux_in_bundle,
            unpack: UnpackOptions {
                reject_symlinks: config.reject_symlinks_in_bundle,
                allow_setuid: config.allow_setuid_in_bundle,
                reject_setuid: config.reject_unsafe_permissions_in_bundle,
                max_total_bytes: config.archive_max_extraction_size,
                ..UnpackOptions::default()
            },
            hooks: HookOptions {
                kill_grace: Duration::from_secs(config.hook_kill_grace_seconds),
                wait_for_inherited_output: config.hook_wait_for_inherited_output,
                deployments_log: config
                    .enable_deployments_log
                    .then(|| root.deployments_log()),
                running: None,
                log_rotation: config.scripts_log_rotation,
                env_policy: hooks::HookEnvPolicy {
                    restrict_to_allowlist: config.restrict_hook_env_to_allowlist,
                    strip_loader_vars: config.strip_loader_env_in_hooks,
                },
                reboot_requests: !config.hook_reboot_command.trim().is_empty(),
            },
            os: Os::Linux,
            archive_reuse: config.enable_archive_reuse,
            reboot_command: config.hook_reboot_command.clone(),
        }
    }
}

/// What happened, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A lifecycle event is about to run `scripts` scripts from `revision_dir`.
    EventStarted {
        event: String,
        scripts: usize,
    },
    EventFinished {
        event: String,
        elapsed: Duration,
    },
    /// The bundle is on disk and unpacked.
    Downloaded {
        files: u64,
        bytes: u64,
        elapsed: Duration,
    },
    Installed {
        summary: install::InstallSummary,
        elapsed: Duration,
    },
    /// Install has copied `done` of `total` files.
    /// DownloadBundle has unpacked `files` files (`bytes` of data) so far.
    Unpacking {
        files: u64,
        bytes: u64,
    },
    Copying {
        done: usize,
        total: usize,
    },
}

/// Where a command continues after the reboot one of its scripts asked for: the script after
/// the one that asked, in the same lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ResumePoint {
    pub event: String,
    /// Index into the event's scripts (may be past the last one: the event is done).
    pub next_script: usize,
}

/// A script asked for a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootRequest {
    pub at: ResumePoint,
    /// The sum of the event's script timeouts: the whole command must end within it, reboot
    /// included.
    pub event_timeout: Duration,
}

/// Which revision a hook event reads its appspec and scripts from (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevisionChoice {
    New,
    LastSuccessfulOrIgnore,
    MostRecentOrIgnore,
}

fn revision_choice(event: &str, spec: &DeploymentSpec) -> RevisionChoice {
    use RevisionChoice::*;
    let rollback = spec.is_blue_green_rollback();
    match event {
        "BeforeBlockTraffic" | "AfterBlockTraffic" if rollback => MostRecentOrIgnore,
        "BeforeBlockTraffic" | "AfterBlockTraffic" | "ApplicationStop" => LastSuccessfulOrIgnore,
        "BeforeAllowTraffic" | "AfterAllowTraffic" if rollback => LastSuccessfulOrIgnore,
        _ => New,
    }
}

/// Runs commands against one deployment root.
pub struct Executor<'a> {
    pub root: DeploymentRoot,
    pub settings: EngineSettings,
    pub fetcher: &'a dyn Fetch,
}

impl Executor<'_> {
    fn deployment_dir(&self, spec: &DeploymentSpec) -> PathBuf {
        self.root
            .deployment_dir(&spec.deployment_group_id, &spec.deployment_id)
    }

    /// True when running `command` would do nothing (§2.4). Parses the appspec of every
    /// revision involved, so a broken appspec fails here, before the acknowledgement.
    pub fn is_noop(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        mapping: &HookMapping,
    ) -> Result<bool, CommandFailure> {
        self.check_group(spec)?;
        if command == "DownloadBundle" || command == "Install" {
            return Ok(false);
        }
        let Some(events) = mapping.events(command) else {
            return Ok(true);
        };
        for event in events {
            if let Some((_, appspec)) = self.hook_revision(event, spec)?
                && appspec.scripts(event).is_some_and(|s| !s.is_empty())
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs one command to completion (a reboot request, which only the daemon offers, ends
    /// it like success).
    pub fn execute(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        mapping: &HookMapping,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CommandFailure> {
        self.execute_from(command, spec, mapping, None, progress)
            .map(|_| ())
    }

    /// Runs one command, from `resume` on when it continues after a reboot. `Ok(Some(_))`: a
    /// hook asked for a reboot; the rest of the command runs after it.
    #[tracing::instrument(skip_all, fields(deployment_id = %spec.deployment_id, command = %command))]
    pub fn execute_from(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        mapping: &HookMapping,
        resume: Option<&ResumePoint>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<RebootRequest>, CommandFailure> {
        let started = Instant::now();
        match resume {
            None => {
                tracing::info!(group = %spec.deployment_group_id, "executing command {command}")
            }
            Some(at) => tracing::info!(
                group = %spec.deployment_group_id,
                "continuing command {command} after a reboot, at script {} of {}",
                at.next_script + 1,
                at.event
            ),
        }
        crate::test_pause::test_panic_point("execute", Some(&spec.deployment_id));
        let result = self.execute_inner(command, spec, mapping, resume, progress);
        let elapsed = started.elapsed().as_secs_f64();
        match &result {
            Ok(None) => tracing::info!("command {command} succeeded in {elapsed:.3}s"),
            Ok(Some(r)) => tracing::info!(
                "command {command} stops after {elapsed:.3}s for the reboot a script of {} asked for",
                r.at.event
            ),
            Err(f) => tracing::warn!(
                error_code = f.error_code,
                script = %f.script_name,
                "command {command} failed after {elapsed:.3}s: {}{}",
                f.message,
                f.details
                    .iter()
                    .filter(|d| !d.ends_with(&f.message))
                    .map(|d| format!("; {d}"))
                    .collect::<String>()
            ),
        }
        result
    }

    fn execute_inner(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        mapping: &HookMapping,
        resume: Option<&ResumePoint>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<RebootRequest>, CommandFailure> {
        self.check_group(spec)?;
        let result = self.execute_command(command, spec, mapping, resume, progress);
        if self.settings.restrict_agent_dirs
            && let Err(e) = crate::hardening::restrict_agent_dirs(
                &self.root,
                &self.settings.tracking_dir_name,
                Some((&spec.deployment_group_id, &spec.deployment_id)),
                None,
            )
        {
            tracing::warn!(
                "restrict_agent_dir_permissions: cannot tighten the deployment root's modes: {e}"
            );
        }
        result
    }

    /// Refuses a group whose directory would be one of the deployment root's own.
    fn check_group(&self, spec: &DeploymentSpec) -> Result<(), CommandFailure> {
        crate::deploy::layout::check_group_name(
            &spec.deployment_group_id,
            &self.settings.tracking_dir_name,
        )
        .map_err(CommandFailure::unknown)
    }

    fn execute_command(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        mapping: &HookMapping,
        resume: Option<&ResumePoint>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<RebootRequest>, CommandFailure> {
        let dir = self.deployment_dir(spec);
        if fs::create_dir_all(&dir).is_err() || !dir.is_dir() {
            return Err(CommandFailure::unknown(format!(
                "Error creating deployment root directory {}",
                dir.display()
            )));
        }
        match command {
            "DownloadBundle" => self.download_bundle(spec, &dir, progress).map(|()| None),
            "Install" => self.install(spec, &dir, mapping, progress).map(|()| None),
            _ => {
                let Some(events) = mapping.events(command) else {
                    return Err(CommandFailure::unknown(format!(
                        "Unsupported command type: {command}."
                    )));
                };
                // After a reboot: the events before the one that asked are done.
                let mut skipping = resume;
                for event in events {
                    let first = match skipping {
                        Some(at) if at.event != *event => continue,
                        Some(at) => {
                            skipping = None;
                            at.next_script
                        }
                        None => 0,
                    };
                    if let Some(reboot) = self.run_hook_event(event, spec, &dir, first, progress)? {
                        return Ok(Some(reboot));
                    }
                }
                if let Some(at) = skipping {
                    return Err(CommandFailure::unknown(format!(
                        "Cannot continue command {command} after the reboot: it has no lifecycle \
                         event {}",
                        at.event
                    )));
                }
                Ok(None)
            }
        }
    }

    fn download_bundle(
        &self,
        spec: &DeploymentSpec,
        dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CommandFailure> {
        let started = Instant::now();
        // Before pruning, so the deployment to reuse is still there.
        if self.reused_archive(spec, dir) {
            self.prune_group(spec)?;
            self.record_most_recent(spec, dir)?;
            progress(Progress::Downloaded {
                files: 0,
                bytes: 0,
                elapsed: started.elapsed(),
            });
            return Ok(());
        }
        self.prune_group(spec)?;
        let archive_dir = dir.join("deployment-archive");
        remove_if_present(&archive_dir).map_err(|e| {
            CommandFailure::unknown(format!("could not clear {}: {e}", archive_dir.display()))
        })?;
        let bundle_file = dir.join("bundle.tar");
        let fetched = self
            .fetcher
            .fetch(&spec.revision, &bundle_file, &archive_dir)
            .map_err(|e| CommandFailure::unknown(e.to_string()))?;
        let (files, bytes) = match fetched {
            Fetched::Directory => (0, 0),
            Fetched::Archive { bundle_type } => {
                // The spec's type decides; an unknown type is read as tar, as the AWS agent does.
                let kind = bundle_type.parse::<BundleType>().unwrap_or(BundleType::Tar);
                let summary = archive::unpack_with_progress(
                    &bundle_file,
                    kind,
                    &archive_dir,
                    &self.settings.unpack,
                    &mut |files, bytes| progress(Progress::Unpacking { files, bytes }),
                )
                .map_err(|e| CommandFailure::unknown(e.to_string()))?;
                (summary.files, summary.bytes)
            }
        };
        reuse::record_download(dir, &spec.revision, self.settings.archive_reuse);
        self.record_most_recent(spec, dir)?;
        progress(Progress::Downloaded {
            files,
            bytes,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// True when `ReuseArchiveFromDeploymentId` asked for reuse and the archive was reused;
    /// the decision (and on a refusal, why) goes to the agent log, scripts.log and the
    /// deployments log.
    fn reused_archive(&self, spec: &DeploymentSpec, dir: &Path) -> bool {
        let Some(source) = spec.reuse_archive_from_deployment_id.as_deref() else {
            return false;
        };
        let (reused, line) = if !self.settings.archive_reuse {
            (
                false,
                format!(
                    "Archive reuse: not reusing the archive of deployment {source}: \
                     enable_archive_reuse is off; downloading the revision"
                ),
            )
        } else {
            match reuse::reuse_archive(&self.root, spec) {
                Ok(()) => (
                    true,
                    format!(
                        "Archive reuse: reused the unpacked archive of deployment {source}; \
                         the revision was not downloaded"
                    ),
                ),
                Err(refused) => (
                    false,
                    format!(
                        "Archive reuse: not reusing the archive of deployment {source}: \
                         {refused}; downloading the revision"
                    ),
                ),
            }
        };
        if reused {
            tracing::info!(source_deployment = source, "{line}");
        } else {
            tracing::warn!(source_deployment = source, "{line}");
        }
        hooks::log_note(dir, &spec.deployment_id, &self.settings.hooks, &line);
        reused
    }

    fn prune_group(&self, spec: &DeploymentSpec) -> Result<(), CommandFailure> {
        let removed = self
            .root
            .prune(
                &spec.deployment_group_id,
                &spec.deployment_id,
                self.settings.max_revisions,
            )
            .map_err(|e| CommandFailure::unknown(format!("Error deleting directories: {e}")))?;
        for path in removed {
            tracing::info!(path = %path.display(), "removed old deployment directory");
        }
        Ok(())
    }

    fn record_most_recent(&self, spec: &DeploymentSpec, dir: &Path) -> Result<(), CommandFailure> {
        let instructions = self.root.instructions_dir();
        fs::create_dir_all(&instructions)
            .and_then(|()| self.root.set_most_recent(&spec.deployment_group_id, dir))
            .map_err(|e| {
                CommandFailure::unknown(format!(
                    "could not record the most recent install in {}: {e}",
                    instructions.display()
                ))
            })
    }

    /// Opens the appspec Install uses (§5.1): the spec's name, then `appspec.yaml`, through
    /// the one lookup every command uses ([`appspec::open_appspec`]).
    fn install_appspec(
        archive_dir: &Path,
        spec: &DeploymentSpec,
    ) -> Result<appspec::OpenedAppSpec, CommandFailure> {
        match appspec::open_appspec(
            archive_dir,
            &[spec.app_spec_filename.as_str(), "appspec.yaml"],
        ) {
            Ok(Some(opened)) => Ok(opened),
            Ok(None) => Err(CommandFailure::unknown(format!(
                "could not read the AppSpec file {}: {}",
                archive_dir.join("appspec.yml").display(),
                io::Error::from(io::ErrorKind::NotFound)
            ))),
            Err(e) => Err(CommandFailure::unknown(e.to_string())),
        }
    }

    fn install(
        &self,
        spec: &DeploymentSpec,
        dir: &Path,
        mapping: &HookMapping,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CommandFailure> {
        let started = Instant::now();
        let archive_dir = dir.join("deployment-archive");
        let opened = Self::install_appspec(&archive_dir, spec)?;
        let appspec = self.load_appspec(&opened)?;
        let refused = appspec.hardening_problems(
            self.settings.reject_unsafe_modes,
            self.settings.reject_unconfined_selinux,
        );
        if let Some(first) = refused.first() {
            let name = opened
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut failure = CommandFailure::unknown(format!("{name}:{first}"));
            failure.details = refused.iter().map(|p| format!("{name}:{p}")).collect();
            return Err(failure);
        }
        if let Some(all) = &spec.all_possible_lifecycle_events {
            check_lifecycle_events(&appspec, &opened.path, all, mapping)?;
        }
        let summary = install::install_with_progress(
            &InstallRequest {
                root: &self.root,
                group_id: &spec.deployment_group_id,
                archive_dir: &archive_dir,
                deployment_dir: dir,
                appspec: &appspec,
                deployment_file_exists_behavior: &spec.file_exists_behavior,
            },
            &mut |done, total| progress(Progress::Copying { done, total }),
        )
        .map_err(|e| CommandFailure::unknown(e.to_string()))?;
        progress(Progress::Installed {
            summary,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    fn load_appspec(&self, opened: &appspec::OpenedAppSpec) -> Result<AppSpec, CommandFailure> {
        let path = &opened.path;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        appspec::parse(&opened.text, self.settings.os)
            .map(|parsed| {
                // Every event of a deployment parses its appspec again; its warnings are
                // logged once, for the first parse of this file.
                if first_parse_of(path) {
                    for w in &parsed.warnings {
                        let at = w.position.map(|p| format!(":{p}")).unwrap_or_default();
                        tracing::warn!("{}{at}: {}", path.display(), w.message);
                    }
                }
                parsed.spec
            })
            .map_err(|e| {
                let mut failure = CommandFailure::unknown(e.to_string());
                failure.details = e
                    .diagnostics
                    .iter()
                    .map(|d| match d.position {
                        Some(p) => format!("{name}:{p}: {}", d.message),
                        None => format!("{name}: {}", d.message),
                    })
                    .collect();
                failure
            })
    }

    /// The revision dir and appspec a hook event uses, or `None` when there is none (noop).
    fn hook_revision(
        &self,
        event: &str,
        spec: &DeploymentSpec,
    ) -> Result<Option<(PathBuf, AppSpec)>, CommandFailure> {
        let current = self.deployment_dir(spec);
        let group = &spec.deployment_group_id;
        let has_archive = current.join("deployment-archive").exists();
        let read_marker = |r: io::Result<Option<PathBuf>>| {
            r.map_err(|e| {
                CommandFailure::unknown(format!("could not read the deployment instructions: {e}"))
            })
        };
        let revision = match revision_choice(event, spec) {
            RevisionChoice::New => Some(current),
            _ if has_archive => Some(current),
            RevisionChoice::LastSuccessfulOrIgnore => {
                read_marker(self.root.last_successful(group))?
            }
            RevisionChoice::MostRecentOrIgnore => read_marker(self.root.most_recent(group))?,
        };
        let Some(revision) = revision else {
            return Ok(None);
        };
        let archive_dir = revision.join("deployment-archive");
        let appspec_path = archive_dir.join(&spec.app_spec_filename);
        let opened = appspec::open_appspec(&archive_dir, &[spec.app_spec_filename.as_str()])
            .map_err(|e| CommandFailure::unknown(e.to_string()))?;
        let Some(opened) = opened else {
            return Err(CommandFailure::unknown(format!(
                "The CodeDeploy agent did not find an AppSpec file within the unpacked revision \
                 directory at revision-relative path \"{name}\". The revision was unpacked to \
                 directory \"{dir}\", and the AppSpec file was expected but not found at path \
                 \"{path}\". Consult the AWS CodeDeploy Appspec documentation for more \
                 information at http://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file.html",
                name = spec.app_spec_filename,
                dir = archive_dir.display(),
                path = appspec_path.display(),
            )));
        };
        let appspec = self.load_appspec(&opened)?;
        Ok(Some((revision, appspec)))
    }

    fn run_hook_event(
        &self,
        event: &str,
        spec: &DeploymentSpec,
        current: &Path,
        first_script: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<RebootRequest>, CommandFailure> {
        let Some((revision, appspec)) = self.hook_revision(event, spec)? else {
            return Ok(None);
        };
        let Some(scripts) = appspec.scripts(event).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let started = Instant::now();
        progress(Progress::EventStarted {
            event: event.to_owned(),
            scripts: scripts.len(),
        });
        let mut env = hook_env(event, spec);
        // v2: without an ETag in the spec, the one S3 returned on download.
        if matches!(spec.revision, Revision::S3 { etag: None, .. })
            && let Some(etag) = crate::revision::recorded_bundle_etag(current)
        {
            env.extra.push(("BUNDLE_ETAG".into(), etag));
        }
        let archive_dir = revision.join("deployment-archive");
        let report = hooks::run_event(&EventRun {
            event,
            scripts,
            archive_dir: &archive_dir,
            deployment_dir: current,
            env: &env,
            options: &self.settings.hooks,
            first_script,
        })?;
        progress(Progress::EventFinished {
            event: event.to_owned(),
            elapsed: started.elapsed(),
        });
        Ok(report.reboot_after.map(|index| RebootRequest {
            at: ResumePoint {
                event: event.to_owned(),
                next_script: index + 1,
            },
            event_timeout: Duration::from_secs(scripts.iter().map(|s| s.timeout).sum()),
        }))
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The environment the hooks of `event` get (§5.7).
pub fn hook_env(event: &str, spec: &DeploymentSpec) -> HookEnv {
    let mut extra = Vec::new();
    match &spec.revision {
        Revision::S3 {
            bucket,
            key,
            version,
            etag,
            ..
        } => {
            extra.push(("BUNDLE_BUCKET".into(), bucket.clone()));
            extra.push(("BUNDLE_KEY".into(), key.clone()));
            if let Some(v) = version {
                extra.push(("BUNDLE_VERSION".into(), v.clone()));
            }
            if let Some(e) = etag {
                extra.push(("BUNDLE_ETAG".into(), e.clone()));
            }
        }
        Revision::GitHub { commit_id, .. } => {
            extra.push(("BUNDLE_COMMIT".into(), commit_id.clone()))
        }
        Revision::LocalFile { .. } | Revision::LocalDirectory { .. } => {}
    }
    HookEnv {
        lifecycle_event: event.to_owned(),
        deployment_id: spec.deployment_id.clone(),
        application_name: spec.application_name.clone(),
        deployment_group_name: spec.deployment_group_name.clone(),
        deployment_group_id: spec.deployment_group_id.clone(),
        extra,
    }
}

/// True the first time `path` is parsed in a row: the last path parsed is remembered, so a
/// deployment's warnings are logged once however many events read its appspec.
fn first_parse_of(path: &Path) -> bool {
    static LAST: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.as_deref() == Some(path) {
        return false;
    }
    *last = Some(path.to_path_buf());
    true
}

/// The Install-time checks against `AllPossibleLifecycleEvents` (§5.10): the one verdict
/// `validate` and `plan` give too ([`appspec::events::check`]).
fn check_lifecycle_events(
    appspec: &AppSpec,
    appspec_path: &Path,
    all: &[String],
    mapping: &HookMapping,
) -> Result<(), CommandFailure> {
    let name = appspec_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let keys: Vec<String> = mapping.commands().cloned().collect();
    appspec::events::check(appspec, &name, all, &keys).map_err(|e| {
        let mut failure = CommandFailure::unknown(e.to_string());
        failure.details = e.details();
        failure
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_payload_is_exact() {
        assert_eq!(
            SUCCESS_PAYLOAD,
            r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#
        );
        let f = CommandFailure::unknown("Unsupported command type: Foo.");
        assert_eq!(
            f.payload_json(),
            r#"{"error_code":5,"script_name":"","message":"Unsupported command type: Foo.","log":""}"#
        );
    }

    #[test]
    fn ruby_array_inspect() {
        assert_eq!(
            crate::appspec::ruby::inspect_str_array(&["Foo".into(), "Bar\"".into()]),
            r#"["Foo", "Bar\""]"#
        );
    }

    #[test]
    fn revision_choice_follows_the_blue_green_rollback_table() {
        let mut spec = crate::spec::DeploymentSpec::from_json(
            r#"{"DeploymentId":"d","DeploymentGroupId":"g","DeploymentGroupName":"n","ApplicationName":"a","Revision":{"RevisionType":"Local Directory","LocalRevision":{"Location":"/x","BundleType":"directory"}}}"#,
        )
        .expect("spec");
        use RevisionChoice::*;
        let table = |spec: &DeploymentSpec| {
            [
                "BeforeBlockTraffic",
                "AfterBlockTraffic",
                "ApplicationStop",
                "BeforeInstall",
                "AfterInstall",
                "ApplicationStart",
                "ValidateService",
                "BeforeAllowTraffic",
                "AfterAllowTraffic",
                "Custom",
            ]
            .map(|e| revision_choice(e, spec))
        };
        assert_eq!(
            table(&spec),
            [
                LastSuccessfulOrIgnore,
                LastSuccessfulOrIgnore,
                LastSuccessfulOrIgnore,
                New,
                New,
                New,
                New,
                New,
                New,
                New
            ]
        );
        spec.deployment_type = "BLUE_GREEN".into();
        spec.deployment_creator = "codeDeployRollback".into();
        assert_eq!(
            table(&spec),
            [
                MostRecentOrIgnore,
                MostRecentOrIgnore,
                LastSuccessfulOrIgnore,
                New,
                New,
                New,
                New,
                LastSuccessfulOrIgnore,
                LastSuccessfulOrIgnore,
                New
            ]
        );
    }
}
