//! The typed, validated appspec: what `appspec::parse` produces and the rest of the engine reads.
//!
//! Every value here has already passed the checks of agent-behaviour.md §5.2–§5.6; code that
//! holds an [`AppSpec`] never re-validates it. Positions are kept so later stages (the install
//! plan, `validate`) can point at the line that caused a problem.

use std::fmt;

/// A place in the appspec file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The `os` key. Exact and case-sensitive in the appspec (`linux`, `windows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Windows,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        }
    }
}

/// `file_exists_behavior`, from the appspec (exact case) or the deployment (upcased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileExistsBehavior {
    Disallow,
    Overwrite,
    Retain,
}

impl FileExistsBehavior {
    /// Parses the exact spelling the appspec requires (`DISALLOW`, `OVERWRITE`, `RETAIN`).
    pub fn from_exact(s: &str) -> Option<Self> {
        match s {
            "DISALLOW" => Some(Self::Disallow),
            "OVERWRITE" => Some(Self::Overwrite),
            "RETAIN" => Some(Self::Retain),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disallow => "DISALLOW",
            Self::Overwrite => "OVERWRITE",
            Self::Retain => "RETAIN",
        }
    }
}

/// A lifecycle event name. The eleven the agent knows are variants; any other name an appspec
/// or `--events` uses is kept as `Custom`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleEvent {
    BeforeBlockTraffic,
    AfterBlockTraffic,
    ApplicationStop,
    DownloadBundle,
    BeforeInstall,
    Install,
    AfterInstall,
    ApplicationStart,
    ValidateService,
    BeforeAllowTraffic,
    AfterAllowTraffic,
    Custom(String),
}

impl LifecycleEvent {
    /// `DEFAULT_ORDERED_LIFECYCLE_EVENTS` of the local CLI (agent-behaviour.md §2.3).
    pub const DEFAULT_ORDER: [LifecycleEvent; 11] = [
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::DownloadBundle,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::Install,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    pub fn parse(name: &str) -> Self {
        Self::DEFAULT_ORDER
            .iter()
            .find(|e| e.as_str() == name)
            .cloned()
            .unwrap_or_else(|| LifecycleEvent::Custom(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::BeforeBlockTraffic => "BeforeBlockTraffic",
            Self::AfterBlockTraffic => "AfterBlockTraffic",
            Self::ApplicationStop => "ApplicationStop",
            Self::DownloadBundle => "DownloadBundle",
            Self::BeforeInstall => "BeforeInstall",
            Self::Install => "Install",
            Self::AfterInstall => "AfterInstall",
            Self::ApplicationStart => "ApplicationStart",
            Self::ValidateService => "ValidateService",
            Self::BeforeAllowTraffic => "BeforeAllowTraffic",
            Self::AfterAllowTraffic => "AfterAllowTraffic",
            Self::Custom(name) => name,
        }
    }
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `files` entry. `source` is relative to the bundle root (`/` or `.` = all of it);
/// `destination` is always a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    pub source: String,
    pub destination: String,
    pub position: Position,
}

/// A `permissions` `type` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    File,
    Directory,
}

/// A validated `mode`: the padded text as written (`"644"`, `"0755"`) and its bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    /// The mode as the agent records it in `-install.json` (padded to at least 3 digits).
    pub text: String,
    pub bits: u32,
}

/// ACL entry kind (`u[ser]`, `g[roup]`, `m[ask]`, `o[ther]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclKind {
    User,
    Group,
    Mask,
    Other,
}

impl AclKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AclKind::User => "user",
            AclKind::Group => "group",
            AclKind::Mask => "mask",
            AclKind::Other => "other",
        }
    }
}

/// One ACL entry. `Display` gives the canonical form `[default:]<type>:<name>:<rwx with ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub default: bool,
    pub kind: AclKind,
    /// User or group name; empty for the base, mask and other entries.
    pub name: String,
    /// Permission bits: 4 = r, 2 = w, 1 = x.
    pub perm: u8,
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.default {
            f.write_str("default:")?;
        }
        let bit = |b: u8, c: char| if self.perm & b != 0 { c } else { '-' };
        write!(
            f,
            "{}:{}:{}{}{}",
            self.kind.as_str(),
            self.name,
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        )
    }
}

/// A SELinux range `s<n>[-s<m>][:c<a>[.c<b>](,c<a>[.c<b>])*]`, normalised. `Display` writes
/// the canonical form (category runs collapsed to `cA.cB`), as the AWS agent's
/// `RangeInfo#get_range` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeRange {
    pub low: u32,
    /// `None` when the range has no high sensitivity or it equals `low`.
    pub high: Option<u32>,
    /// Sorted, without duplicates.
    pub categories: Vec<u16>,
}

impl fmt::Display for SeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.low)?;
        if let Some(high) = self.high.filter(|h| *h != self.low) {
            write!(f, "-s{high}")?;
        }
        let mut i = 0;
        let cats = &self.categories;
        let mut first = true;
        while i < cats.len() {
            let start = cats[i];
            let mut end = start;
            while i + 1 < cats.len() && cats[i + 1] == end + 1 {
                i += 1;
                end = cats[i];
            }
            f.write_str(if first { ":" } else { "," })?;
            first = false;
            if end == start {
                write!(f, "c{start}")?;
            } else {
                write!(f, "c{start}.c{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// A SELinux `context`: user and range optional, type required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeContext {
    pub user: Option<String>,
    pub type_: String,
    pub range: Option<SeRange>,
}

/// One `permissions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub object: String,
    /// Glob where only `*` is special; `**` means any depth. Default `**`.
    pub pattern: String,
    pub except: Vec<String>,
    /// Subset of file/directory; default both.
    pub types: Vec<ObjectType>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    pub acls: Vec<AclEntry>,
    pub context: Option<SeContext>,
    pub position: Position,
}

impl Permission {
    pub fn applies_to(&self, t: ObjectType) -> bool {
        self.types.contains(&t)
    }
}

/// One hook script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Relative to the revision's `deployment-archive`, stripped.
    pub location: String,
    /// Seconds; default 3600, always > 0.
    pub timeout: u64,
    pub runas: Option<String>,
    pub sudo: bool,
    pub position: Position,
}

/// The default hook timeout in seconds (agent-behaviour.md §5.6).
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;

/// A parsed, valid EC2/on-premises appspec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub os: Os,
    pub files: Vec<FileMapping>,
    pub permissions: Vec<Permission>,
    /// Hook events in file order; null entries are already dropped.
    pub hooks: Vec<(String, Vec<Script>)>,
    /// Where each `hooks` key is written, same order as `hooks` (for diagnostics).
    pub hook_positions: Vec<Position>,
    pub file_exists_behavior: Option<FileExistsBehavior>,
}

impl AppSpec {
    /// The scripts for `event`, or `None` when the appspec has no entry for it.
    pub fn scripts(&self, event: &str) -> Option<&[Script]> {
        self.hooks
            .iter()
            .rev() // a repeated key: the last one wins, as in Ruby
            .find(|(name, _)| name == event)
            .map(|(_, scripts)| scripts.as_slice())
    }

    /// What the v2 hardening switches refuse in `permissions`, one message per entry, with
    /// its position: `mode:` values with setuid or setgid bits
    /// (`reject_unsafe_permissions_in_bundle`) and the SELinux types of
    /// [`UNCONFINED_SELINUX_TYPES`] (`reject_unconfined_selinux_in_bundle`).
    pub fn hardening_problems(
        &self,
        reject_unsafe_modes: bool,
        reject_unconfined: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for p in &self.permissions {
            if reject_unsafe_modes
                && let Some(mode) = &p.mode
                && mode.bits & 0o6000 != 0
            {
                problems.push(format!(
                    "{}: permissions for {} set mode {} with the setuid or setgid bit, which \
                     reject_unsafe_permissions_in_bundle refuses; drop the 4000/2000 bits from \
                     the mode",
                    p.position, p.object, mode.text
                ));
            }
            if reject_unconfined
                && let Some(context) = &p.context
                && UNCONFINED_SELINUX_TYPES.contains(&context.type_.as_str())
            {
                problems.push(format!(
                    "{}: permissions for {} set the SELinux type {}, which \
                     reject_unconfined_selinux_in_bundle refuses; use a confined type",
                    p.position, p.object, context.type_
                ));
            }
        }
        problems
    }

    /// Where the `hooks` key `event` is written (its last occurrence), if known.
    pub fn hook_position(&self, event: &str) -> Option<Position> {
        self.hooks
            .iter()
            .zip(&self.hook_positions)
            .rev()
            .find(|((name, _), _)| name == event)
            .map(|(_, pos)| *pos)
    }
}

/// SELinux types that escape confinement, refused by `reject_unconfined_selinux_in_bundle`
/// (v2's list).
pub const UNCONFINED_SELINUX_TYPES: &[&str] = &["unconfined_t", "kernel_t", "init_t"];
