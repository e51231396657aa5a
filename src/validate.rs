//! `codedeploy-agent validate [PATH]`: check an appspec, a bundle directory or a bundle archive
//! without deploying it, and print every problem compiler-style:
//! `appspec.yml:LINE:COL: error: MESSAGE`, then a summary. `--format json` prints the same as
//! a JSON array. Exit 0 when valid (warnings allowed), 1 when not, 2 on usage errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::appspec::{self, AppSpec, Position, Severity};
use crate::cli::{OutputFormat, ValidateArgs};
use crate::deploy::plan;
use crate::revision::archive::{self, UnpackOptions};

/// One finding, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: &'static str,
    pub message: String,
}

impl Finding {
    fn new(file: &str, position: Option<Position>, severity: Severity, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            severity: match severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            message,
        }
    }

    fn is_error(&self) -> bool {
        self.severity == "error"
    }

    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => {
                format!("{}:{l}:{c}: {}: {}", self.file, self.severity, self.message)
            }
            _ => format!("{}: {}: {}", self.file, self.severity, self.message),
        }
    }
}

/// A usage problem: the path cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValidateUsageError(String);

/// A private temporary directory, removed on drop (archives are unpacked into one to be read).
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "codedeploy-validate-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Checks `path` for `os` and returns every finding.
pub fn check(path: &Path, os: appspec::Os) -> Result<Vec<Finding>, ValidateUsageError> {
    check_with_events(path, os, None)
}

/// Checks `path` for `os`, with `events` the custom events a deployment names (`--events`).
pub fn check_with_events(
    path: &Path,
    os: appspec::Os,
    events: Option<&[String]>,
) -> Result<Vec<Finding>, ValidateUsageError> {
    let meta = fs::metadata(path)
        .map_err(|e| ValidateUsageError(format!("cannot read {}: {e}", path.display())))?;
    let _scratch: ScratchDir;
    let opened_in = |dir: &Path,
                     label: &str,
                     missing: String|
     -> Result<appspec::OpenedAppSpec, Vec<Finding>> {
        match appspec::open_appspec(dir, &["appspec.yml", "appspec.yaml", "appspec.json"]) {
            Ok(Some(o)) => Ok(o),
            Ok(None) => Err(vec![Finding::new(label, None, Severity::Error, missing)]),
            Err(e) => Err(vec![Finding::new(
                label,
                None,
                Severity::Error,
                e.to_string(),
            )]),
        }
    };
    let (bundle, name, text) = if meta.is_dir() {
        match opened_in(
            path,
            "appspec.yml",
            format!(
                "no appspec.yml or appspec.yaml in the bundle directory {}",
                path.display()
            ),
        ) {
            Ok(o) => (Some(path.to_path_buf()), o.name, o.text),
            Err(findings) => return Ok(findings),
        }
    } else {
        match archive::detect(path)
            .map_err(|e| ValidateUsageError(format!("cannot read {}: {e}", path.display())))?
        {
            Some(kind) => {
                let scratch = ScratchDir::new().map_err(|e| {
                    ValidateUsageError(format!("cannot create a temporary directory: {e}"))
                })?;
                let target = scratch.0.join("deployment-archive");
                let archive_name = path.display().to_string();
                if let Err(e) = archive::unpack(path, kind, &target, &UnpackOptions::default()) {
                    return Ok(vec![Finding::new(
                        &archive_name,
                        None,
                        Severity::Error,
                        e.to_string(),
                    )]);
                }
                let found = opened_in(
                    &target,
                    &archive_name,
                    "the bundle has no appspec.yml or appspec.yaml at its top level (or in a single top-level directory)".into(),
                );
                _scratch = scratch;
                match found {
                    Ok(o) => (Some(target), o.name, o.text),
                    Err(findings) => return Ok(findings),
                }
            }
            None => {
                // A single appspec file named on the command line (a symlink there is the
                // user's own choice): read through the same lookup, with the same limits.
                let real = fs::canonicalize(path).map_err(|e| {
                    ValidateUsageError(format!("cannot read {}: {e}", path.display()))
                })?;
                let dir = real.parent().unwrap_or(Path::new("/"));
                let file_name = real
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match appspec::open_appspec(dir, &[file_name.as_str()]) {
                    Ok(Some(o)) => (None, o.name, o.text),
                    Ok(None) => {
                        return Err(ValidateUsageError(format!(
                            "cannot read {}: {}",
                            path.display(),
                            std::io::Error::from(std::io::ErrorKind::NotFound)
                        )));
                    }
                    Err(e) => return Err(ValidateUsageError(e.to_string())),
                }
            }
        }
    };
    let mut findings = Vec::new();
    // ECS and Lambda appspecs (a top-level Resources list) have their own structure and no
    // bundle to check.
    if let Some(platform) = appspec::platform::check(&text) {
        findings.extend(
            platform
                .diagnostics
                .into_iter()
                .map(|d| Finding::new(&name, d.position, d.severity, d.message)),
        );
        return Ok(findings);
    }
    let spec = match appspec::parse(&text, os) {
        Ok(parsed) => {
            findings.extend(
                parsed
                    .warnings
                    .into_iter()
                    .map(|d| Finding::new(&name, d.position, d.severity, d.message)),
            );
            parsed.spec
        }
        Err(e) => {
            findings.extend(
                e.diagnostics
                    .into_iter()
                    .map(|d| Finding::new(&name, d.position, d.severity, d.message)),
            );
            return Ok(findings);
        }
    };
    // The same verdict Install gives (local, plan and the daemon): appspec::events::check.
    let all = crate::local::all_possible_events(events);
    if let Err(e) = appspec::events::check(&spec, &name, &all, &[]) {
        match &e {
            appspec::events::EventsError::Unknown { unknown, .. } => {
                for u in unknown {
                    findings.push(Finding::new(
                        &name,
                        u.position,
                        Severity::Error,
                        u.explanation(),
                    ));
                }
            }
            appspec::events::EventsError::CustomMissing { .. } => {
                findings.push(Finding::new(&name, None, Severity::Error, e.to_string()));
            }
        }
    }
    if let Some(bundle) = bundle {
        check_bundle(&spec, &bundle, &name, &mut findings);
    }
    Ok(findings)
}

/// Bundle-level checks: hook scripts exist inside the bundle (and are or will be executable),
/// and the files section builds a valid install plan (sources exist, no two sources map to one
/// destination, permission rules hold).
fn check_bundle(spec: &AppSpec, bundle: &Path, name: &str, findings: &mut Vec<Finding>) {
    for (_, scripts) in &spec.hooks {
        for script in scripts {
            let rel = Path::new(&script.location);
            let escapes = rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir);
            let abs = bundle.join(rel);
            if escapes {
                findings.push(Finding::new(
                    name,
                    Some(script.position),
                    Severity::Error,
                    format!(
                        "the script location {} points outside the bundle",
                        script.location
                    ),
                ));
            } else if !abs.is_file() {
                findings.push(Finding::new(
                    name,
                    Some(script.position),
                    Severity::Error,
                    format!(
                        "Script does not exist at specified location: {}",
                        script.location
                    ),
                ));
            } else if fs::metadata(&abs).is_ok_and(|m| m.permissions().mode() & 0o111 == 0) {
                findings.push(Finding::new(name, Some(script.position), Severity::Warning, format!(
                    "Script at specified location: {} is not executable; the agent will make it executable before running it", script.location)));
            }
        }
    }
    if let Err(e) = plan::build(spec, bundle) {
        for problem in e.problems() {
            findings.push(Finding::new(
                name,
                problem.position,
                Severity::Error,
                problem.to_string(),
            ));
        }
    }
}

/// Runs `validate` and returns its exit code: 0 valid, 1 problems found, 2 usage error.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let events: Option<Vec<String>> = args
        .events
        .as_ref()
        .map(|e| e.split(',').map(str::to_owned).collect());
    let findings = match check_with_events(&args.path, args.os.into(), events.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            crate::errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let errors = findings.iter().filter(|f| f.is_error()).count();
    let warnings = findings.len() - errors;
    match args.format {
        OutputFormat::Json => {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&findings).unwrap_or_else(|_| "[]".into())
            );
        }
        OutputFormat::Text => {
            for f in &findings {
                crate::outln!("{}", f.render());
            }
            if errors == 0 {
                crate::outln!(
                    "{}: valid ({warnings} warning{})",
                    args.path.display(),
                    if warnings == 1 { "" } else { "s" }
                );
            } else {
                crate::outln!(
                    "{}: {errors} error{} and {warnings} warning{}",
                    args.path.display(),
                    if errors == 1 { "" } else { "s" },
                    if warnings == 1 { "" } else { "s" }
                );
            }
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
