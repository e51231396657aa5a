//! Parsing and validation of `appspec.yml` text into an [`AppSpec`].
//!
//! The YAML is read as Ruby's `YAML.load` (Psych 4, YAML 1.1) reads it (`yaml`, `ruby`), then
//! checked in the AWS agent's order: version, os, hooks, files, permissions,
//! file_exists_behavior (agent-behaviour.md §5.2–§5.6). Unlike the AWS agent, which stops at
//! the first problem, every problem is collected with its `line:column`; the first error is
//! the one the AWS agent would raise, with its text word for word. Where the AWS agent would
//! crash on a value of the wrong shape, the error is ours and says what was expected.
//!
//! Deliberate differences from the AWS agent (each pinned by a test):
//! - `mode: 0644` (plain, read by YAML 1.1 as octal 420) is mode 0644, not 0420: the digits as
//!   written are used, without extra leading zeros (`01777` is 1777).
//! - A `context` without `range` is valid (the AWS agent crashes at Install).
//! - Aliases (`*x`) are refused with their position and never expanded; anchors are fine.
//! - A repeated key keeps the last value, as in Ruby, but also gives a warning.
//! - A quoted version that would be valid unquoted gets a hint appended to the AWS message.
//! - Empty or blank `runas` is no runas (`None`), not `su "" -c`.
//! - Warnings for keys ignored because of their case or a leading `:`, for hook names that
//!   differ from a lifecycle event only in case, and for a non-boolean `sudo`.
//! - `acls` entries are read from the text as written (`1000:7` is not a sexagesimal integer).
//! - A sensitivity beyond `u32` is an `invalid sensitivity` error instead of a Bignum.

use std::fmt;

use super::acl::parse_ace;
use super::model::{
    AclEntry, AppSpec, DEFAULT_TIMEOUT_SECS, FileExistsBehavior, FileMapping, LifecycleEvent, Mode,
    ObjectType, Os, Permission, Position, Script, SeContext,
};
use super::ruby::{self, Plain};
use super::selinux::parse_range;
use super::yaml::{self, Kind, Val};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The AWS agent would refuse the appspec (or crash on it).
    Error,
    /// Accepted, but probably not what the author meant.
    Warning,
}

/// One problem in an appspec, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The offending value, else its key or enclosing mapping; `None` for the whole file.
    pub position: Option<Position>,
    pub severity: Severity,
    /// For errors the AWS agent raises, its message word for word.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = self.position {
            write!(f, "{pos}: ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A valid appspec and what looked suspicious in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub spec: AppSpec,
    pub warnings: Vec<Diagnostic>,
}

/// All problems found: the errors first, ordered so that the first is the one the AWS agent
/// would raise (its check order: version, os, hooks, files, permissions,
/// file_exists_behavior), then the warnings. `Display` is the first error's message, exactly
/// the AWS text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.first_error().map_or("", |d| d.message.as_str()))]
pub struct AppSpecError {
    pub diagnostics: Vec<Diagnostic>,
}

impl AppSpecError {
    /// The error the AWS agent would report.
    pub fn first_error(&self) -> Option<&Diagnostic> {
        self.errors().next()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// Parses and validates appspec text for an agent running on `os`.
pub fn parse(text: &str, os: Os) -> Result<Parsed, AppSpecError> {
    let loaded = yaml::load(text).map_err(|diagnostics| AppSpecError { diagnostics })?;
    let mut c = Checker {
        os,
        errors: Vec::new(),
        warnings: loaded.warnings,
    };
    let spec = c.appspec(loaded.root.as_ref());
    match spec {
        Some(spec) if c.errors.is_empty() => Ok(Parsed {
            spec,
            warnings: c.warnings,
        }),
        _ => {
            let mut diagnostics = c.errors;
            diagnostics.extend(c.warnings);
            Err(AppSpecError { diagnostics })
        }
    }
}

const EMPTY: &str = "The deployment failed because the application specification file was empty. \
                     Make sure your AppSpec file defines at minimum the 'version' and 'os' \
                     properties.";
const NO_LOCATION: &str = "The deployment failed because the application specification file \
                           specifies a script with no location value. Specify the location in \
                           the hooks section of the AppSpec file, and then try again.";
const BAD_TIMEOUT: &str = "The deployment failed because an invalid timeout value was provided \
                           for a script in the application specification file. Make corrections \
                           in the hooks section of the AppSpec file, and then try again.";
const NO_SOURCE: &str = "The deployment failed because the application specification file \
                         specifies a destination file, but no source file. Update the files \
                         section of the AppSpec file, and then try again.";
const NO_OBJECT: &str = "The deployment failed because a permission listed in the application \
                         specification file has no object value. Update the permissions section \
                         of the AppSpec file, and then try again.";
const WINDOWS_PERMISSIONS: &str = "The deployment failed because the application specification \
                                   file specifiles file permissions, but the deployment is \
                                   targeting one or more Windows Server instances. Permissions \
                                   are supported only for Amazon Linux, Ubuntu Server, and Red \
                                   Hat Enterprise Linux (RHEL) instances. Update the permissions \
                                   section of the AppSpec file, and then try again.";
/// Appended to the version message when quotes are the only problem.
const QUOTED_VERSION_HINT: &str =
    " The value is a quoted string; write it without quotes: version: 0.0";

const TOP_KEYS: &[&str] = &[
    "version",
    "os",
    "files",
    "permissions",
    "hooks",
    "file_exists_behavior",
];
const SCRIPT_KEYS: &[&str] = &["location", "timeout", "runas", "sudo"];
const FILE_KEYS: &[&str] = &["source", "destination"];
const PERMISSION_KEYS: &[&str] = &[
    "object", "pattern", "except", "type", "owner", "group", "mode", "acls", "context",
];
const CONTEXT_KEYS: &[&str] = &["name", "type", "range", "role"];

/// Ruby `String#strip`.
fn ruby_strip(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, '\0' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '))
}

/// The value for `key` in a mapping (string keys only, as Ruby's `hash['key']`).
fn get<'a>(map: &'a [(Val, Val)], key: &str) -> Option<&'a Val> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Like [`get`], but `nil` counts as absent.
fn get_some<'a>(map: &'a [(Val, Val)], key: &str) -> Option<&'a Val> {
    get(map, key).filter(|v| !v.is_null())
}

/// Like [`get`], but `nil` and `false` count as absent (Ruby `x || default`).
fn get_truthy<'a>(map: &'a [(Val, Val)], key: &str) -> Option<&'a Val> {
    get(map, key).filter(|v| v.truthy())
}

/// Marks a problem already recorded in `Checker::errors`.
struct Reported;

struct Checker {
    os: Os,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, pos: Position, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            position: Some(pos),
            severity: Severity::Error,
            message: message.into(),
        });
    }

    fn warn(&mut self, pos: Position, message: String) {
        self.warnings.push(Diagnostic {
            position: Some(pos),
            severity: Severity::Warning,
            message,
        });
    }

    /// Warns about keys that are silently ignored because of their spelling.
    fn check_keys(&mut self, map: &[(Val, Val)], known: &[&str]) {
        for (k, _) in map {
            match &k.kind {
                Kind::Str if !known.contains(&k.text.as_str()) => {
                    if let Some(want) = known.iter().find(|w| w.eq_ignore_ascii_case(&k.text)) {
                        self.warn(
                            k.pos,
                            format!(
                                "The key {} is ignored: keys are case-sensitive. Did you mean \
                                 {want}?",
                                k.text
                            ),
                        );
                    }
                }
                Kind::Sym(name) if known.contains(&name.as_str()) => self.warn(
                    k.pos,
                    format!(
                        "The key :{name} is read by YAML as a Ruby symbol and ignored; write \
                         {name} without the leading colon."
                    ),
                ),
                _ => {}
            }
        }
    }

    fn appspec(&mut self, root: Option<&Val>) -> Option<AppSpec> {
        let Some(root) = root.filter(|r| r.truthy()) else {
            self.errors.push(Diagnostic {
                // An empty document has no node to point at; `~` or `false` has.
                position: root.filter(|r| !r.text.is_empty()).map(|r| r.pos),
                severity: Severity::Error,
                message: EMPTY.to_owned(),
            });
            return None;
        };
        let Some(top) = root.as_map() else {
            self.error(
                root.pos,
                format!(
                    "The appspec must be a YAML mapping with keys such as version, os, files and \
                     hooks at the top level, but it is {}.",
                    root.describe()
                ),
            );
            return None;
        };
        self.check_keys(top, TOP_KEYS);
        self.version(top, root.pos);
        self.os_key(top, root.pos);
        let (hooks, hook_positions) = self.hooks(get_truthy(top, "hooks"));
        let files = self.files(get_truthy(top, "files"));
        let permissions = self.permissions(get_truthy(top, "permissions"));
        let file_exists_behavior = self.file_exists_behavior(get_some(top, "file_exists_behavior"));
        Some(AppSpec {
            os: self.os,
            files,
            permissions,
            hooks,
            hook_positions,
            file_exists_behavior,
        })
    }

    /// `[0.0].include?(version)`: Ruby `==`, so any integer or float zero.
    fn version(&mut self, top: &[(Val, Val)], top_pos: Position) {
        let is_zero = |kind: &Kind| match kind {
            Kind::Int(i) => i.is_zero(),
            Kind::Float(f) => *f == 0.0,
            _ => false,
        };
        let v = get(top, "version");
        if v.is_some_and(|v| is_zero(&v.kind)) {
            return;
        }
        let shown = v.map(Val::to_ruby_s).unwrap_or_default();
        let mut message = format!(
            "The deployment failed because an invalid version value ({shown}) was entered in the \
             application specification file. Make sure your AppSpec file specifies \"0.0\" as \
             the version, and then try again."
        );
        if let Some(v) = v
            && v.quoted
            && match ruby::resolve_plain(&v.text) {
                Plain::Int(i) => i.is_zero(),
                Plain::Float(f) => f == 0.0,
                _ => false,
            }
        {
            message.push_str(QUOTED_VERSION_HINT);
        }
        self.error(v.map_or(top_pos, |v| v.pos), message);
    }

    fn os_key(&mut self, top: &[(Val, Val)], top_pos: Position) {
        let v = get(top, "os");
        if v.and_then(Val::as_str) == Some(self.os.as_str()) {
            return;
        }
        let shown = v.map(Val::to_ruby_s).unwrap_or_default();
        self.error(
            v.map_or(top_pos, |v| v.pos),
            format!(
                "The deployment failed because the application specification file specifies an \
                 unsupported operating system ({shown}). Specify either \"linux\" or \"windows\" \
                 in the os section of the AppSpec file, and then try again."
            ),
        );
    }

    /// The hooks in file order, and the position of each one's key.
    fn hooks(&mut self, hooks: Option<&Val>) -> (Vec<(String, Vec<Script>)>, Vec<Position>) {
        let mut out = Vec::new();
        let mut positions = Vec::new();
        let Some(hooks) = hooks else {
            return (out, positions);
        };
        let Some(map) = hooks.as_map() else {
            self.error(
                hooks.pos,
                format!(
                    "The hooks section must be a mapping from lifecycle event names to lists of \
                     scripts, but it is {}.",
                    hooks.describe()
                ),
            );
            return (out, positions);
        };
        for (key, scripts) in map {
            // "Ignore empty hooks": nil (and false) values are dropped.
            if !scripts.truthy() {
                continue;
            }
            let event = key.to_ruby_s();
            if let Some(known) = LifecycleEvent::DEFAULT_ORDER
                .iter()
                .find(|e| e.as_str() != event && e.as_str().eq_ignore_ascii_case(&event))
            {
                self.warn(
                    key.pos,
                    format!(
                        "The hook {event} differs from the lifecycle event {known} only in case; \
                         event names are case-sensitive, so its scripts will not run for {known}."
                    ),
                );
            }
            let Kind::Seq(items) = &scripts.kind else {
                self.error(
                    scripts.pos,
                    format!(
                        "The hook {event} must be a list of scripts, each with a location, but \
                         it is {}.",
                        scripts.describe()
                    ),
                );
                continue;
            };
            let list = items
                .iter()
                .filter_map(|item| self.script(&event, item))
                .collect();
            out.push((event, list));
            positions.push(key.pos);
        }
        (out, positions)
    }

    fn script(&mut self, event: &str, item: &Val) -> Option<Script> {
        let Some(map) = item.as_map() else {
            self.error(
                item.pos,
                format!(
                    "Each script of the hook {event} must be a mapping with a location (and \
                     optionally timeout, runas and sudo), but it is {}.",
                    item.describe()
                ),
            );
            return None;
        };
        self.check_keys(map, SCRIPT_KEYS);
        let location =
            get_some(map, "location").map(|v| (v.pos, ruby_strip(&v.to_ruby_s()).to_owned()));
        let location = match location {
            Some((_, loc)) if !loc.is_empty() => Some(loc),
            Some((pos, _)) => {
                self.error(pos, NO_LOCATION);
                None
            }
            None => {
                self.error(item.pos, NO_LOCATION);
                None
            }
        };
        let timeout = self.timeout(event, get_truthy(map, "timeout"));
        let runas = get_some(map, "runas")
            .map(|v| ruby_strip(&v.to_ruby_s()).to_owned())
            .filter(|r| !r.is_empty());
        let sudo = match get(map, "sudo") {
            None => false,
            Some(v) => {
                if !matches!(v.kind, Kind::Null | Kind::Bool(_)) {
                    self.warn(
                        v.pos,
                        format!(
                            "sudo should be true or false; {} counts as true, as it does for the \
                             AWS agent.",
                            v.inspect()
                        ),
                    );
                }
                v.truthy()
            }
        };
        Some(Script {
            location: location?,
            timeout: timeout?,
            runas,
            sudo,
            position: item.pos,
        })
    }

    /// `(timeout || 3600).to_i`, which must be > 0. Huge values saturate.
    fn timeout(&mut self, event: &str, v: Option<&Val>) -> Option<u64> {
        let Some(v) = v else {
            return Some(DEFAULT_TIMEOUT_SECS);
        };
        let secs: i128 = match &v.kind {
            Kind::Int(i) => i.clamped(),
            Kind::Str => ruby::string_to_i(&v.text).clamped(),
            // Float#to_i truncates (saturating `as` only matters beyond i128).
            Kind::Float(f) if f.is_finite() => f.trunc() as i128,
            _ => {
                self.error(
                    v.pos,
                    format!(
                        "The timeout of a script in the hook {event} must be a whole number of \
                         seconds, but it is {} ({}).",
                        v.describe(),
                        v.to_ruby_s()
                    ),
                );
                return None;
            }
        };
        if secs <= 0 {
            self.error(v.pos, BAD_TIMEOUT);
            return None;
        }
        Some(u64::try_from(secs).unwrap_or(u64::MAX))
    }

    fn files(&mut self, files: Option<&Val>) -> Vec<FileMapping> {
        let Some(files) = files else {
            return Vec::new();
        };
        let Kind::Seq(items) = &files.kind else {
            self.error(
                files.pos,
                format!(
                    "The files section must be a list of mappings, each with a source and a \
                     destination, but it is {}.",
                    files.describe()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(map) = item.as_map() else {
                self.error(
                    item.pos,
                    format!(
                        "Each files entry must be a mapping with a source and a destination, but \
                         it is {}.",
                        item.describe()
                    ),
                );
                continue;
            };
            self.check_keys(map, FILE_KEYS);
            let source = get_some(map, "source").map(Val::to_ruby_s);
            let destination = get_some(map, "destination").map(Val::to_ruby_s);
            match (source, destination) {
                (None, _) => self.error(item.pos, NO_SOURCE),
                (Some(source), None) => self.error(
                    item.pos,
                    format!(
                        "The deployment failed because the application specification file \
                         specifies only a source file ({source}). Add the name of the \
                         destination file to the files section of the AppSpec file, and then try \
                         again."
                    ),
                ),
                (Some(source), Some(destination)) => {
                    out.push(FileMapping {
                        source,
                        destination,
                        position: item.pos,
                    });
                }
            }
        }
        out
    }

    fn permissions(&mut self, permissions: Option<&Val>) -> Vec<Permission> {
        let Some(permissions) = permissions else {
            return Vec::new();
        };
        let Kind::Seq(items) = &permissions.kind else {
            self.error(
                permissions.pos,
                format!(
                    "The permissions section must be a list of mappings, each with an object, but \
                     it is {}.",
                    permissions.describe()
                ),
            );
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| self.permission(item))
            .collect()
    }

    fn permission(&mut self, item: &Val) -> Option<Permission> {
        let Some(map) = item.as_map() else {
            self.error(
                item.pos,
                format!(
                    "Each permissions entry must be a mapping with an object, but it is {}.",
                    item.describe()
                ),
            );
            return None;
        };
        let object = get_some(map, "object");
        if object.is_none() {
            self.error(item.pos, NO_OBJECT);
        }
        if self.os == Os::Windows {
            if object.is_some() {
                self.error(item.pos, WINDOWS_PERMISSIONS);
            }
            return None;
        }
        self.check_keys(map, PERMISSION_KEYS);
        // The AWS agent evaluates the options in this order, then checks the stripped object.
        let pattern = self.text_option(get_truthy(map, "pattern"), "pattern");
        let except = self.except(get_truthy(map, "except"));
        let types = self.types(get_truthy(map, "type"));
        let owner = self.text_option(get_truthy(map, "owner"), "owner");
        let group = self.text_option(get_truthy(map, "group"), "group");
        let mode = get_some(map, "mode").map(|v| self.mode(v)).transpose();
        let acls = self.acls(get_some(map, "acls"));
        let context = get_some(map, "context")
            .map(|v| self.context(v))
            .transpose();
        let object = object.and_then(|o| {
            let text = ruby_strip(&o.to_ruby_s()).to_owned();
            if text.is_empty() {
                self.error(o.pos, NO_OBJECT);
                None
            } else {
                Some(text)
            }
        });
        Some(Permission {
            object: object?,
            pattern: pattern.ok()?.unwrap_or_else(|| "**".to_owned()),
            except: except.ok()?,
            types: types.ok()?,
            owner: owner.ok()?,
            group: group.ok()?,
            mode: mode.ok()?,
            acls: acls.ok()?,
            context: context.ok()?,
            position: item.pos,
        })
    }

    /// A scalar option rendered with `to_s`; `Ok(None)` when absent.
    fn text_option(&mut self, v: Option<&Val>, key: &str) -> Result<Option<String>, Reported> {
        let Some(v) = v else { return Ok(None) };
        if v.is_scalar() {
            Ok(Some(v.to_ruby_s()))
        } else {
            self.error(
                v.pos,
                format!(
                    "The permissions {key} must be a single value, but it is {}.",
                    v.describe()
                ),
            );
            Err(Reported)
        }
    }

    fn except(&mut self, v: Option<&Val>) -> Result<Vec<String>, Reported> {
        let Some(v) = v else { return Ok(Vec::new()) };
        let Kind::Seq(items) = &v.kind else {
            self.error(
                v.pos,
                format!(
                    "The permissions except must be a list of patterns, but it is {}.",
                    v.describe()
                ),
            );
            return Err(Reported);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            if item.is_scalar() && !item.is_null() {
                out.push(item.to_ruby_s());
            } else {
                ok = false;
                self.error(
                    item.pos,
                    format!(
                        "Each except pattern must be a string, but it is {}.",
                        item.describe()
                    ),
                );
            }
        }
        if ok { Ok(out) } else { Err(Reported) }
    }

    fn types(&mut self, v: Option<&Val>) -> Result<Vec<ObjectType>, Reported> {
        let Some(v) = v else {
            return Ok(vec![ObjectType::File, ObjectType::Directory]);
        };
        let Kind::Seq(items) = &v.kind else {
            self.error(
                v.pos,
                format!(
                    "The permissions type must be a list such as [file] or [file, directory], but \
                     it is {} ({}).",
                    v.describe(),
                    v.to_ruby_s()
                ),
            );
            return Err(Reported);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let t = match item.as_str() {
                Some("file") => ObjectType::File,
                Some("directory") => ObjectType::Directory,
                _ => {
                    ok = false;
                    self.error(
                        item.pos,
                        format!(
                            "The deployment failed because the application specification \
                             filespecifies a permission for an object type not supported for \
                             permissions ({}). Update the permissions section of the AppSpec \
                             file, and then try again.",
                            item.to_ruby_s()
                        ),
                    );
                    continue;
                }
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if ok { Ok(out) } else { Err(Reported) }
    }

    /// `ModeInfo`: `to_s`, left-padded with `0` to 3 characters, at most 4, digits 0-7.
    ///
    /// Deliberate fix: a plain scalar YAML 1.1 reads as octal (`0644` is the integer 420 to
    /// Psych, so the AWS agent sets mode 0420) keeps the digits as written.
    fn mode(&mut self, v: &Val) -> Result<Mode, Reported> {
        let leading_zero_octal = !v.quoted
            && matches!(v.kind, Kind::Int(_))
            && v.text.len() > 1
            && v.text.starts_with('0')
            && !v.text.starts_with("0x")
            && !v.text.starts_with("0b");
        let mut text = if leading_zero_octal {
            // Extra leading zeros change nothing in octal: `01777` is mode 1777.
            let mut t = v.text.as_str();
            while t.len() > 4 && t.starts_with('0') {
                t = &t[1..];
            }
            t.to_owned()
        } else {
            v.to_ruby_s()
        };
        while text.chars().count() < 3 {
            text.insert(0, '0');
        }
        if text.chars().count() > 4 {
            self.error(
                v.pos,
                format!(
                    "The deployment failed because the length of a permissions mode ({text}) in \
                     the application specification file is invalid. Permissions modes must be \
                     between one and four characters long. Update the permissions section of the \
                     AppSpec file, and then try again."
                ),
            );
            return Err(Reported);
        }
        if let Some(bad) = text.chars().find(|c| !('0'..='7').contains(c)) {
            self.error(
                v.pos,
                format!(
                    "The deployment failed because the permissions mode ({text}) in the \
                     application specification file contains an invalid character ({bad}). Update \
                     the permissions section of the AppSpec file, and then try again."
                ),
            );
            return Err(Reported);
        }
        let bits = u32::from_str_radix(&text, 8).expect("at most 4 octal digits");
        Ok(Mode { text, bits })
    }

    fn acls(&mut self, v: Option<&Val>) -> Result<Vec<AclEntry>, Reported> {
        let Some(v) = v else { return Ok(Vec::new()) };
        let Kind::Seq(items) = &v.kind else {
            self.error(
                v.pos,
                format!(
                    "The permissions acls must be a list of entries such as u:bob:rwx, but it is \
                     {}.",
                    v.describe()
                ),
            );
            return Err(Reported);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            if !item.is_scalar() || item.is_null() {
                ok = false;
                self.error(
                    item.pos,
                    format!(
                        "Each acls entry must be a string such as u:bob:rwx, but it is {}.",
                        item.describe()
                    ),
                );
                continue;
            }
            // The text as written: `1000:7` would otherwise be a sexagesimal integer.
            match parse_ace(&item.text) {
                Ok(ace) => out.push(ace),
                Err(message) => {
                    ok = false;
                    self.error(item.pos, message);
                }
            }
        }
        if ok { Ok(out) } else { Err(Reported) }
    }

    fn context(&mut self, v: &Val) -> Result<SeContext, Reported> {
        let invalid = |v: &Val| {
            format!(
                "The deployment failed because the application specification file specifies an \
                 invalid context type ({}). Update the permissions section of the AppSpec file, \
                 and then try again.",
                v.inspect()
            )
        };
        let Some(map) = v.as_map() else {
            self.error(v.pos, invalid(v));
            return Err(Reported);
        };
        self.check_keys(map, CONTEXT_KEYS);
        let Some(type_) = get_some(map, "type") else {
            self.error(v.pos, invalid(v));
            return Err(Reported);
        };
        if !type_.is_scalar() {
            self.error(
                type_.pos,
                format!(
                    "The context type must be a single value, but it is {}.",
                    type_.describe()
                ),
            );
            return Err(Reported);
        }
        let user = get_truthy(map, "name").map(Val::to_ruby_s);
        // Deliberate fix: a context without range is valid (the AWS agent crashes at Install).
        let range = match get_some(map, "range") {
            None => None,
            Some(r) if r.is_scalar() => match parse_range(&r.to_ruby_s()) {
                Ok(range) => Some(range),
                Err(message) => {
                    self.error(r.pos, message);
                    return Err(Reported);
                }
            },
            Some(r) => {
                self.error(
                    r.pos,
                    format!(
                        "The context range must be a string such as s0:c0.c5, but it is {}.",
                        r.describe()
                    ),
                );
                return Err(Reported);
            }
        };
        Ok(SeContext {
            user,
            type_: type_.to_ruby_s(),
            range,
        })
    }

    fn file_exists_behavior(&mut self, v: Option<&Val>) -> Option<FileExistsBehavior> {
        let v = v?;
        let behavior = v.as_str().and_then(FileExistsBehavior::from_exact);
        if behavior.is_none() {
            self.error(
                v.pos,
                format!(
                    "The deployment failed because an invalid file_exists_behavior value ({}) was \
                     entered in the application specification file. Make sure your AppSpec file \
                     specifies one of DISALLOW,OVERWRITE,RETAIN as the file_exists_behavior, and \
                     then try again.",
                    v.to_ruby_s()
                ),
            );
        }
        behavior
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let err = parse(text, Os::Linux).expect_err("should fail");
        err.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn display_is_the_first_aws_error_only() {
        let err = parse("version: 1\nos: linux\nHooks: {}\n", Os::Linux).expect_err("bad version");
        assert!(
            err.to_string()
                .starts_with("The deployment failed because an invalid version value (1)")
        );
        assert!(!err.to_string().contains("1:10"));
        // Warnings come after the errors.
        assert_eq!(
            err.diagnostics.last().map(|d| d.severity),
            Some(Severity::Warning)
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "version: 0.0\nos: linux\nhooks:\n  A:\n    - location: a\n      timeout: 0\n  \
                    B:\n    - location: b\n      timeout: -1\nfiles:\n  - source: x\n";
        let got = errors(text);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with("6:16: The deployment failed because an invalid timeout"));
        assert!(got[1].starts_with("9:16: The deployment failed because an invalid timeout"));
        assert!(got[2].starts_with("11:5: The deployment failed because the application specification file specifies only a source file (x)."));
    }

    #[test]
    fn quoted_version_hint_only_when_quotes_are_the_problem() {
        let hinted = errors("version: \"0.0\"\nos: linux\n");
        assert!(hinted[0].ends_with(QUOTED_VERSION_HINT), "{hinted:?}");
        let plain = errors("version: 'one'\nos: linux\n");
        assert!(!plain[0].contains("quoted"), "{plain:?}");
    }

    #[test]
    fn mode_with_leading_zero_keeps_its_digits() {
        let text = "version: 0.0\nos: linux\npermissions:\n  - object: /a\n    mode: 0644\n";
        let spec = parse(text, Os::Linux).expect("valid").spec;
        let mode = spec.permissions[0].mode.as_ref().expect("has a mode");
        assert_eq!((mode.text.as_str(), mode.bits), ("0644", 0o644));
    }

    #[test]
    fn crlf_and_bom_are_read() {
        let text = "\u{feff}version: 0.0\r\nos: linux\r\nhooks:\r\n  ApplicationStart:\r\n    - location: s.sh\r\n";
        let spec = parse(text, Os::Linux).expect("valid").spec;
        assert_eq!(
            spec.scripts("ApplicationStart").map(<[Script]>::len),
            Some(1)
        );
    }

    #[test]
    fn windows_accepts_windows_and_rejects_permissions() {
        assert!(parse("version: 0.0\nos: windows\n", Os::Windows).is_ok());
        let err = parse(
            "version: 0.0\nos: windows\npermissions:\n  - object: x\n",
            Os::Windows,
        )
        .expect_err("permissions on windows");
        assert_eq!(err.to_string(), WINDOWS_PERMISSIONS);
    }

    #[test]
    fn flow_style_and_inline_maps_work() {
        let text = "{version: 0.0, os: linux, files: [{source: a, destination: /b}]}";
        let spec = parse(text, Os::Linux).expect("valid").spec;
        assert_eq!(spec.files[0].destination, "/b");
        assert_eq!(
            spec.files[0].position,
            Position {
                line: 1,
                column: 35
            }
        );
    }
}
