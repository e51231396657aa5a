//! `codedeploy-agent plan`: what a local deployment with the same options would do, without
//! changing anything. The bundle is read in place (a directory) or unpacked into a scratch
//! directory (an archive); the group's previous install is read from its cleanup file.
//!
//! Exit 0 when the deployment would install, 1 where it would fail at Install (appspec
//! problems, plan problems, a DISALLOW conflict), naming the reason.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::appspec::{self, AppSpec, Os};
use crate::cli::LocalArgs;
use crate::deploy::install::{self, CleanupEntry};
use crate::deploy::layout::DeploymentRoot;
use crate::deploy::plan::{self, DiskView, Instruction};
use crate::local::{self, Location};
use crate::revision::archive::{self, BundleType, UnpackOptions};
use crate::validate::ScratchDir;

fn read_appspec(dir: &Path, names: &[&str]) -> Result<(PathBuf, AppSpec), String> {
    let opened = appspec::open_appspec(dir, names)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no {} in {}", names.join(" or "), dir.display()))?;
    let (path, text) = (opened.path, opened.text);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    appspec::parse(&text, Os::Linux)
        .map(|p| (path.clone(), p.spec))
        .map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| match d.position {
                    Some(p) => format!("{name}:{p}: {}", d.message),
                    None => format!("{name}: {}", d.message),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
}

fn copy_destinations(plan: &plan::InstallPlan) -> Vec<PathBuf> {
    plan.instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::Copy { destination, .. } => Some(destination.to_path_buf()),
            _ => None,
        })
        .collect()
}

/// The paths the cleanup of `previous` (a cleanup file's entries, oldest first) would remove:
/// everything that exists, and directories that would be empty by then.
fn simulate_cleanup(previous: &[PathBuf]) -> HashSet<PathBuf> {
    let mut removed = HashSet::new();
    for path in previous.iter().rev() {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                let empty_after = fs::read_dir(path)
                    .map(|entries| entries.flatten().all(|e| removed.contains(&e.path())))
                    .unwrap_or(false);
                if empty_after {
                    removed.insert(path.clone());
                }
            }
            Ok(_) => {
                removed.insert(path.clone());
            }
            Err(_) => {}
        }
    }
    removed
}

/// Runs `plan` with the options of `local`.
pub fn run(args: &LocalArgs) -> ExitCode {
    // `-v` is codedeploy-local's --version; plan takes the same options, so the same answer.
    if args.version {
        crate::outln!("{}", crate::VERSION);
        return ExitCode::SUCCESS;
    }
    let fail = |message: &str| {
        crate::outln!("Install would fail: {message}");
        ExitCode::from(1)
    };
    let usage = |message: &str| {
        crate::outln!("ERROR: {message}");
        ExitCode::from(2)
    };
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return usage(&format!("cannot read the current directory: {e}")),
    };
    let (config, _) = match local::load_config(args.agent_configuration_file.as_deref()) {
        Ok(c) => c,
        Err(message) => return usage(&message),
    };
    config.report_warnings(false);
    let run = match local::validate(args, &cwd) {
        Ok(run) => run,
        Err(e) => return usage(&e.0),
    };
    let Location::Local(location) = &run.location else {
        return usage("plan reads local bundles only (a directory or a tgz/tar/zip file)");
    };
    let _scratch;
    let bundle_dir = if run.bundle_type == "directory" {
        location.clone()
    } else {
        let scratch = match ScratchDir::new() {
            Ok(s) => s,
            Err(e) => return usage(&format!("cannot create a temporary directory: {e}")),
        };
        let target = scratch.path().join("deployment-archive");
        let kind = run
            .bundle_type
            .parse::<BundleType>()
            .unwrap_or(BundleType::Tar);
        if let Err(e) = archive::unpack(location, kind, &target, &UnpackOptions::default()) {
            return fail(&e.to_string());
        }
        _scratch = scratch;
        target
    };
    let appspec_name = run
        .appspec_filename
        .clone()
        .unwrap_or_else(|| "appspec.yml".into());
    let (appspec_path, spec) =
        match read_appspec(&bundle_dir, &[&appspec_name, "appspec.yaml", "appspec.yml"]) {
            Ok(x) => x,
            Err(message) => return fail(&message),
        };
    // The verdict Install gives on the event names (appspec::events::check), with local's
    // AllPossibleLifecycleEvents and hook mapping.
    let all = local::all_possible_events(run.events.as_deref());
    let keys: Vec<String> = local::hook_events(run.events.as_deref())
        .into_iter()
        .collect();
    let file_name = appspec_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = appspec::events::check(&spec, &file_name, &all, &keys) {
        let mut message = e.to_string();
        for detail in e.details() {
            message.push_str("\n  ");
            message.push_str(&detail);
        }
        return fail(&message);
    }

    let root = DeploymentRoot::new(&config.root_dir, &config.program_name);
    let group = &run.deployment_group_id;
    crate::outln!(
        "Plan for a deployment of {} to group {group}",
        run.location_text
    );
    crate::outln!("Deployment root: {}", config.root_dir.display());
    let previous: Vec<PathBuf> = fs::read(root.cleanup_file(group))
        .map(|b| install::parse_cleanup(&b))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            CleanupEntry::Path(p) => Some(p),
            CleanupEntry::Semanage(_) => None,
        })
        .collect();
    let previous_set: HashSet<&Path> = previous.iter().map(PathBuf::as_path).collect();

    // Install deletes the previous install's files before it plans; preview the same.
    let removed = simulate_cleanup(&previous);
    let view = DiskView::without(removed.clone());
    let problems = |e: plan::PlanError| {
        e.problems()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let all_copies = match plan::build_with_view(&spec, &bundle_dir, None, &view) {
        Ok(p) => p,
        Err(e) => return fail(&problems(e)),
    };
    let resolved =
        match install::effective_behavior(&spec, &run.file_exists_behavior.to_uppercase()) {
            Ok(behavior) => {
                match plan::build_with_view(&spec, &bundle_dir, Some(behavior), &view) {
                    Ok(plan) => {
                        let planned: HashSet<PathBuf> =
                            copy_destinations(&plan).into_iter().collect();
                        let retained = copy_destinations(&all_copies)
                            .into_iter()
                            .filter(|d| !planned.contains(d) && view.lexists(d))
                            .collect();
                        let overwritten = planned.into_iter().filter(|d| view.lexists(d)).collect();
                        install::Resolved {
                            plan,
                            overwritten,
                            retained,
                        }
                    }
                    Err(e) => return fail(&problems(e)),
                }
            }
            Err(invalid) => {
                match install::resolve_conflicts(all_copies, Err(invalid), |p| view.lexists(p)) {
                    Ok(r) => r,
                    Err(e) => return fail(&e.to_string()),
                }
            }
        };

    let new_targets: HashSet<&Path> = resolved
        .plan
        .instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::Copy { destination, .. } => Some(&**destination),
            Instruction::Mkdir { directory } => Some(&**directory),
            _ => None,
        })
        .collect();
    let overwritten: HashSet<&Path> = resolved.overwritten.iter().map(PathBuf::as_path).collect();
    crate::outln!();
    crate::outln!("Files:");
    let mut counts = (0usize, 0usize, 0usize, 0usize);
    // What the cleanup removes and this revision does not bring back; directories that keep
    // foreign files survive the cleanup and are not listed.
    for p in previous
        .iter()
        .rev()
        .filter(|p| removed.contains(*p) && !new_targets.contains(p.as_path()))
    {
        crate::outln!("  remove     {}", p.display());
        counts.3 += 1;
    }
    for i in &resolved.plan.instructions {
        match i {
            Instruction::Mkdir { directory } => {
                crate::outln!("  mkdir      {}", directory.display())
            }
            Instruction::Copy {
                source,
                destination,
                symlink,
            } => {
                let verb = if previous_set.contains(&**destination) {
                    counts.0 += 1;
                    "replace"
                } else if overwritten.contains(&**destination) {
                    counts.1 += 1;
                    "overwrite"
                } else {
                    counts.0 += 1;
                    "copy"
                };
                let rel = source.strip_prefix(&bundle_dir).unwrap_or(source);
                let link = if *symlink { " (symlink)" } else { "" };
                crate::outln!(
                    "  {verb:<10} {} <- {}{link}",
                    destination.display(),
                    rel.display()
                );
            }
            _ => {}
        }
    }
    for p in &resolved.retained {
        crate::outln!(
            "  retain     {} (exists; file_exists_behavior RETAIN)",
            p.display()
        );
        counts.2 += 1;
    }
    let permissions: Vec<String> = resolved
        .plan
        .instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::Chmod { mode, file } => {
                Some(format!("  chmod {} {}", mode.text, file.display()))
            }
            Instruction::Chown { owner, group, file } => Some(format!(
                "  chown {}:{} {}",
                owner.as_deref().unwrap_or(""),
                group.as_deref().unwrap_or(""),
                file.display()
            )),
            Instruction::Setfacl { acl, file } => Some(format!(
                "  setfacl {} {}",
                acl.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                file.display()
            )),
            Instruction::Semanage { context, file } => Some(format!(
                "  semanage -t {}{} {}",
                context.type_,
                context
                    .range
                    .as_ref()
                    .map(|r| format!(" -r {r}"))
                    .unwrap_or_default(),
                file.display()
            )),
            _ => None,
        })
        .collect();
    if !permissions.is_empty() {
        crate::outln!();
        crate::outln!("Permissions:");
        for p in &permissions {
            crate::outln!("{p}");
        }
    }

    crate::outln!();
    crate::outln!("Hooks:");
    let last_successful = root.last_successful(group).ok().flatten();
    for event in local::event_sequence(run.events.as_deref()) {
        if event == "DownloadBundle" || event == "Install" {
            continue;
        }
        let previous_event = matches!(
            event.as_str(),
            "BeforeBlockTraffic" | "AfterBlockTraffic" | "ApplicationStop"
        );
        let (source, appspec) = if previous_event {
            match &last_successful {
                Some(dir) => {
                    match read_appspec(&dir.join("deployment-archive"), &[&appspec_name]) {
                        Ok((_, a)) => (
                            format!(" (from the last successful revision {})", dir.display()),
                            Some(a),
                        ),
                        Err(e) => (
                            format!(
                                " (the last successful revision's appspec cannot be read: {e})"
                            ),
                            None,
                        ),
                    }
                }
                None => (" (no previous revision: nothing runs)".to_owned(), None),
            }
        } else {
            (String::new(), Some(spec.clone()))
        };
        let scripts = appspec
            .as_ref()
            .and_then(|a| a.scripts(&event))
            .unwrap_or_default();
        if scripts.is_empty() {
            if !source.is_empty() && appspec.is_none() {
                crate::outln!("  {event}{source}");
            }
            continue;
        }
        crate::outln!("  {event}{source}");
        for s in scripts {
            let user = s.runas.as_deref().unwrap_or("the agent's user");
            let sudo = if s.sudo { ", sudo" } else { "" };
            crate::outln!(
                "    {} (timeout {} s, as {user}{sudo})",
                s.location,
                s.timeout
            );
        }
    }
    crate::outln!();
    crate::outln!(
        "Summary: {} to copy, {} to overwrite, {} to retain, {} to remove, {} permission changes",
        counts.0,
        counts.1,
        counts.2,
        counts.3,
        permissions.len()
    );
    ExitCode::SUCCESS
}
