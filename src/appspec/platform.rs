//! ECS and Lambda appspecs (`appspec.yaml` / `appspec.json` for the `ECS` and `Lambda` compute
//! platforms): recognised by content (a top-level `Resources` list) and checked against the
//! structure AWS documents, reporting every problem with `line:column` like the EC2 checks.
//!
//! The host agent never runs these (CodeDeploy itself reads them); `validate` checks them so a
//! pipeline can refuse a broken one before it reaches CodeDeploy. References:
//! - <https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-resources.html>
//!   (ECS: `TaskDefinition`, `LoadBalancerInfo.ContainerName` / `ContainerPort` required;
//!   `PlatformVersion`, `NetworkConfiguration.AwsvpcConfiguration`, `CapacityProviderStrategy`
//!   optional. Lambda: `Name`, `Alias`, `CurrentVersion`, `TargetVersion` required strings,
//!   the versions positive integers.)
//! - <https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-hooks.html>
//!   (ECS events `BeforeInstall`, `AfterInstall`, `AfterAllowTestTraffic`, `BeforeAllowTraffic`,
//!   `AfterAllowTraffic`; Lambda events `BeforeAllowTraffic`, `AfterAllowTraffic`; each hook is
//!   one Lambda function name, as a list of one-key mappings).
//! - <https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-example.html>
//!
//! AWS writes these keys both capitalised (`Resources`, `TaskDefinition`) and in lower case
//! (`resources`, `currentversion`); keys are matched without regard to case here. The messages
//! are ours (the host agent has none for these files).

use super::model::Position;
use super::parse::{Diagnostic, Severity};
use super::ruby::RInt;
use super::yaml::{self, Kind, Val};

/// Which compute platform an appspec is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Ecs,
    Lambda,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ecs => "ECS",
            Platform::Lambda => "Lambda",
        }
    }

    fn events(self) -> &'static [&'static str] {
        match self {
            Platform::Ecs => ECS_EVENTS,
            Platform::Lambda => LAMBDA_EVENTS,
        }
    }
}

/// The outcome of checking an ECS or Lambda appspec: the platform (when the resource type
/// said which) and every problem, errors and warnings, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCheck {
    pub platform: Option<Platform>,
    pub diagnostics: Vec<Diagnostic>,
}

impl PlatformCheck {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

const ECS_TYPE: &str = "AWS::ECS::Service";
const LAMBDA_TYPE: &str = "AWS::Lambda::Function";
const ECS_EVENTS: &[&str] = &[
    "BeforeInstall",
    "AfterInstall",
    "AfterAllowTestTraffic",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];
const LAMBDA_EVENTS: &[&str] = &["BeforeAllowTraffic", "AfterAllowTraffic"];
const TOP_KEYS: &[&str] = &["version", "Resources", "Hooks"];
const EC2_KEYS: &[&str] = &["os", "files", "permissions", "file_exists_behavior"];
const RESOURCE_KEYS: &[&str] = &["Type", "Properties"];
const ECS_KEYS: &[&str] = &[
    "TaskDefinition",
    "LoadBalancerInfo",
    "PlatformVersion",
    "NetworkConfiguration",
    "CapacityProviderStrategy",
];
const LB_KEYS: &[&str] = &["ContainerName", "ContainerPort"];
const NETWORK_KEYS: &[&str] = &["AwsvpcConfiguration"];
const AWSVPC_KEYS: &[&str] = &["Subnets", "SecurityGroups", "AssignPublicIp"];
const CAPACITY_KEYS: &[&str] = &["Base", "CapacityProvider", "Weight"];
const LAMBDA_KEYS: &[&str] = &["Name", "Alias", "CurrentVersion", "TargetVersion"];

/// Checks `text` if it is an ECS or Lambda appspec: a mapping whose top level has a
/// `Resources` key (any case). Returns `None` for anything else (an EC2/On-Premises appspec,
/// or text that is not YAML at all: the EC2 parser reports those).
pub fn check(text: &str) -> Option<PlatformCheck> {
    let loaded = yaml::load(text).ok()?;
    let root = loaded.root?;
    let top = root.as_map()?;
    lookup(top, "Resources")?;
    let mut c = Checker {
        diagnostics: loaded.warnings,
        platform: None,
    };
    c.top(&root, top);
    c.diagnostics.sort_by_key(|d| d.position);
    Some(PlatformCheck {
        platform: c.platform,
        diagnostics: c.diagnostics,
    })
}

/// The key of `map` equal to `key` without regard to case.
fn lookup<'a>(map: &'a [(Val, Val)], key: &str) -> Option<(&'a Val, &'a Val)> {
    map.iter()
        .find(|(k, _)| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(key)))
        .map(|(k, v)| (k, v))
}

fn lookup_value<'a>(map: &'a [(Val, Val)], key: &str) -> Option<&'a Val> {
    lookup(map, key).map(|(_, v)| v)
}

/// A whole number given as an integer or, as AWS's examples do, a string of digits.
fn whole_number(v: &Val) -> Option<i128> {
    match &v.kind {
        Kind::Int(RInt::Small(n)) => Some(*n),
        Kind::Str if !v.text.is_empty() && v.text.bytes().all(|b| b.is_ascii_digit()) => {
            v.text.parse().ok()
        }
        _ => None,
    }
}

struct Checker {
    diagnostics: Vec<Diagnostic>,
    platform: Option<Platform>,
}

impl Checker {
    fn error(&mut self, pos: Position, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            position: Some(pos),
            severity: Severity::Error,
            message: message.into(),
        });
    }

    fn warn(&mut self, pos: Position, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            position: Some(pos),
            severity: Severity::Warning,
            message: message.into(),
        });
    }

    /// Warns about keys that are not part of `section`'s documented structure; errors for a
    /// key given twice in different cases (which one CodeDeploy reads is not defined).
    fn keys(&mut self, map: &[(Val, Val)], known: &[&str], section: &str) {
        for (i, (k, _)) in map.iter().enumerate() {
            let Some(name) = k.as_str() else {
                self.error(
                    k.pos,
                    format!(
                        "{section}: keys must be strings, but this one is {}",
                        k.describe()
                    ),
                );
                continue;
            };
            if let Some((first, _)) = map[..i]
                .iter()
                .find(|(p, _)| p.as_str().is_some_and(|p| p.eq_ignore_ascii_case(name)))
            {
                self.error(
                    k.pos,
                    format!(
                        "{section}: {name} is given twice (first as {} at line {}, column {}); keep one",
                        first.text, first.pos.line, first.pos.column
                    ),
                );
                continue;
            }
            if !known.iter().any(|w| w.eq_ignore_ascii_case(name)) {
                self.warn(
                    k.pos,
                    format!(
                        "{section}: unknown key {name} (expected {}); CodeDeploy ignores or rejects it",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// A required non-empty string at `key`, else an error at the value or the mapping.
    fn required_string<'v>(
        &mut self,
        map: &'v [(Val, Val)],
        at: Position,
        key: &str,
        section: &str,
    ) -> Option<&'v Val> {
        match lookup_value(map, key) {
            None => {
                self.error(at, format!("{section}: {key} is required"));
                None
            }
            Some(v) if v.is_null() => {
                self.error(v.pos, format!("{section}: {key} is required but empty"));
                None
            }
            Some(v) => match v.as_str() {
                Some(s) if s.trim().is_empty() => {
                    self.error(v.pos, format!("{section}: {key} must not be blank"));
                    None
                }
                Some(_) => Some(v),
                None if v.is_scalar() => {
                    // `Name: 123` is a number to YAML; CodeDeploy wants a string.
                    self.warn(
                        v.pos,
                        format!(
                            "{section}: {key} is {}; quote it so it is read as a string",
                            v.describe()
                        ),
                    );
                    Some(v)
                }
                None => {
                    self.error(
                        v.pos,
                        format!(
                            "{section}: {key} must be a string, but it is {}",
                            v.describe()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn required_map<'v>(
        &mut self,
        map: &'v [(Val, Val)],
        at: Position,
        key: &str,
        section: &str,
    ) -> Option<(&'v Val, &'v [(Val, Val)])> {
        let Some(v) = lookup_value(map, key) else {
            self.error(at, format!("{section}: {key} is required"));
            return None;
        };
        match v.as_map() {
            Some(m) => Some((v, m)),
            None => {
                self.error(
                    v.pos,
                    format!(
                        "{section}: {key} must be a mapping, but it is {}",
                        v.describe()
                    ),
                );
                None
            }
        }
    }

    fn top(&mut self, root: &Val, top: &[(Val, Val)]) {
        self.keys_top(top);
        match lookup_value(top, "version") {
            None => self.error(root.pos, "version is required; write version: 0.0"),
            Some(v) => {
                let zero = match &v.kind {
                    Kind::Int(i) => i.is_zero(),
                    Kind::Float(f) => *f == 0.0,
                    Kind::Str => v.text.trim() == "0.0",
                    _ => false,
                };
                if !zero {
                    self.error(
                        v.pos,
                        format!(
                            "version must be 0.0, but it is {}",
                            if v.is_scalar() {
                                v.to_ruby_s()
                            } else {
                                v.describe().to_owned()
                            }
                        ),
                    );
                }
            }
        }
        if let Some(resources) = lookup_value(top, "Resources") {
            self.resources(resources);
        }
        if let Some(hooks) = lookup_value(top, "Hooks") {
            self.hooks(hooks);
        }
    }

    fn keys_top(&mut self, top: &[(Val, Val)]) {
        for (k, _) in top {
            if let Some(name) = k.as_str()
                && EC2_KEYS.iter().any(|e| e.eq_ignore_ascii_case(name))
            {
                self.error(
                    k.pos,
                    format!(
                        "{name} belongs to EC2/On-Premises appspecs; an ECS or Lambda appspec \
                         (it has Resources) has only version, Resources and Hooks"
                    ),
                );
            }
        }
        let known: Vec<&str> = TOP_KEYS.iter().chain(EC2_KEYS).copied().collect();
        self.keys(top, &known, "appspec");
    }

    fn resources(&mut self, resources: &Val) {
        let items = match &resources.kind {
            Kind::Seq(items) => items,
            _ => {
                self.error(
                    resources.pos,
                    format!(
                        "Resources must be a list with one entry (- TargetService: or - <function>:), but it is {}",
                        resources.describe()
                    ),
                );
                return;
            }
        };
        if items.is_empty() {
            self.error(
                resources.pos,
                "Resources is empty: name the ECS service or Lambda function to deploy",
            );
            return;
        }
        for extra in items.iter().skip(1) {
            self.error(
                extra.pos,
                "Resources has more than one entry; a CodeDeploy deployment updates one ECS \
                 service or one Lambda function",
            );
        }
        let Some(entry) = items.first() else { return };
        let Some(map) = entry.as_map() else {
            self.error(
                entry.pos,
                format!(
                    "a Resources entry must be a mapping of one name to its Type and Properties, but it is {}",
                    entry.describe()
                ),
            );
            return;
        };
        if map.len() != 1 {
            self.error(
                entry.pos,
                format!(
                    "a Resources entry must have exactly one name (such as TargetService), but it has {}",
                    map.len()
                ),
            );
        }
        let Some((name, body)) = map.first() else {
            return;
        };
        let label = name.as_str().unwrap_or("resource").to_owned();
        let Some(body_map) = body.as_map() else {
            self.error(
                body.pos,
                format!(
                    "{label}: expected Type and Properties under the resource name, but found {}",
                    body.describe()
                ),
            );
            return;
        };
        self.keys(body_map, RESOURCE_KEYS, &label);
        let platform = match lookup_value(body_map, "Type") {
            None => {
                self.error(
                    name.pos,
                    format!("{label}: Type is required ({ECS_TYPE} or {LAMBDA_TYPE})"),
                );
                None
            }
            Some(t) => match t.as_str() {
                Some(ECS_TYPE) => Some(Platform::Ecs),
                Some(LAMBDA_TYPE) => Some(Platform::Lambda),
                Some(other) => {
                    let hint = [ECS_TYPE, LAMBDA_TYPE]
                        .into_iter()
                        .find(|w| w.eq_ignore_ascii_case(other.trim()))
                        .map(|w| format!(" (did you mean {w}? the type is case-sensitive)"))
                        .unwrap_or_default();
                    self.error(
                        t.pos,
                        format!(
                            "{label}: unsupported Type {other}: expected {ECS_TYPE} or {LAMBDA_TYPE}{hint}"
                        ),
                    );
                    None
                }
                None => {
                    self.error(
                        t.pos,
                        format!("{label}: Type must be a string, but it is {}", t.describe()),
                    );
                    None
                }
            },
        };
        self.platform = platform;
        let section = format!("{label}.Properties");
        let Some((_, props)) = self.required_map(body_map, name.pos, "Properties", &label) else {
            return;
        };
        let props_pos = lookup(body_map, "Properties").map_or(name.pos, |(k, _)| k.pos);
        match platform {
            Some(Platform::Ecs) => self.ecs(props, props_pos, &section),
            Some(Platform::Lambda) => self.lambda(props, props_pos, &section),
            None => {}
        }
    }

    fn ecs(&mut self, props: &[(Val, Val)], at: Position, section: &str) {
        self.keys(props, ECS_KEYS, section);
        self.required_string(props, at, "TaskDefinition", section);
        let lb_section = format!("{section}.LoadBalancerInfo");
        if let Some((lb, lb_map)) = self.required_map(props, at, "LoadBalancerInfo", section) {
            self.keys(lb_map, LB_KEYS, &lb_section);
            self.required_string(lb_map, lb.pos, "ContainerName", &lb_section);
            match lookup_value(lb_map, "ContainerPort") {
                None => self.error(lb.pos, format!("{lb_section}: ContainerPort is required")),
                Some(port) => match whole_number(port) {
                    Some(1..=65535) => {}
                    _ => self.error(
                        port.pos,
                        format!(
                            "{lb_section}: ContainerPort must be a port number from 1 to 65535, but it is {}",
                            if port.is_scalar() { port.to_ruby_s() } else { port.describe().to_owned() }
                        ),
                    ),
                },
            }
        }
        if let Some(v) = lookup_value(props, "PlatformVersion")
            && v.as_str().is_none_or(|s| s.trim().is_empty())
        {
            self.error(
                v.pos,
                format!(
                    "{section}: PlatformVersion must be a version string such as LATEST or 1.4.0"
                ),
            );
        }
        if let Some(net) = lookup_value(props, "NetworkConfiguration") {
            self.network(net, &format!("{section}.NetworkConfiguration"));
        }
        if let Some(cps) = lookup_value(props, "CapacityProviderStrategy") {
            self.capacity(cps, &format!("{section}.CapacityProviderStrategy"));
        }
    }

    fn network(&mut self, net: &Val, section: &str) {
        let Some(map) = net.as_map() else {
            self.error(
                net.pos,
                format!(
                    "{section} must be a mapping with AwsvpcConfiguration, but it is {}",
                    net.describe()
                ),
            );
            return;
        };
        self.keys(map, NETWORK_KEYS, section);
        let vpc_section = format!("{section}.AwsvpcConfiguration");
        let Some((vpc, vpc_map)) = self.required_map(map, net.pos, "AwsvpcConfiguration", section)
        else {
            return;
        };
        self.keys(vpc_map, AWSVPC_KEYS, &vpc_section);
        match lookup_value(vpc_map, "Subnets") {
            None => self.error(vpc.pos, format!("{vpc_section}: Subnets is required")),
            Some(s) => self.string_list(s, &format!("{vpc_section}.Subnets"), true),
        }
        if let Some(s) = lookup_value(vpc_map, "SecurityGroups") {
            self.string_list(s, &format!("{vpc_section}.SecurityGroups"), false);
        }
        if let Some(v) = lookup_value(vpc_map, "AssignPublicIp")
            && !matches!(v.as_str(), Some("ENABLED" | "DISABLED"))
        {
            self.error(
                v.pos,
                format!(
                    "{vpc_section}: AssignPublicIp must be ENABLED or DISABLED, but it is {}",
                    v.to_ruby_s()
                ),
            );
        }
    }

    fn string_list(&mut self, v: &Val, section: &str, non_empty: bool) {
        let Kind::Seq(items) = &v.kind else {
            self.error(
                v.pos,
                format!(
                    "{section} must be a list of strings, but it is {}",
                    v.describe()
                ),
            );
            return;
        };
        if non_empty && items.is_empty() {
            self.error(v.pos, format!("{section} must list at least one entry"));
        }
        for item in items {
            if item.as_str().is_none_or(|s| s.trim().is_empty()) {
                self.error(
                    item.pos,
                    format!(
                        "{section}: each entry must be a non-empty string, but one is {}",
                        item.describe()
                    ),
                );
            }
        }
    }

    fn capacity(&mut self, cps: &Val, section: &str) {
        let Kind::Seq(items) = &cps.kind else {
            self.error(
                cps.pos,
                format!(
                    "{section} must be a list of {{CapacityProvider, Base, Weight}}, but it is {}",
                    cps.describe()
                ),
            );
            return;
        };
        for item in items {
            let Some(map) = item.as_map() else {
                self.error(
                    item.pos,
                    format!(
                        "{section}: each entry must be a mapping, but one is {}",
                        item.describe()
                    ),
                );
                continue;
            };
            self.keys(map, CAPACITY_KEYS, section);
            self.required_string(map, item.pos, "CapacityProvider", section);
            for key in ["Base", "Weight"] {
                if let Some(v) = lookup_value(map, key)
                    && whole_number(v).is_none()
                {
                    self.error(
                        v.pos,
                        format!(
                            "{section}: {key} must be a whole number of 0 or more, but it is {}",
                            v.to_ruby_s()
                        ),
                    );
                }
            }
        }
    }

    fn lambda(&mut self, props: &[(Val, Val)], at: Position, section: &str) {
        self.keys(props, LAMBDA_KEYS, section);
        self.required_string(props, at, "Name", section);
        self.required_string(props, at, "Alias", section);
        let mut versions = Vec::new();
        for key in ["CurrentVersion", "TargetVersion"] {
            match lookup_value(props, key) {
                None => self.error(at, format!("{section}: {key} is required")),
                Some(v) => match whole_number(v) {
                    Some(n) if n >= 1 => versions.push((n, v.pos)),
                    _ => self.error(
                        v.pos,
                        format!(
                            "{section}: {key} must be a published version number (a positive integer), but it is {}",
                            if v.is_scalar() { v.to_ruby_s() } else { v.describe().to_owned() }
                        ),
                    ),
                },
            }
        }
        if let [(current, _), (target, pos)] = versions[..]
            && current == target
        {
            self.warn(
                pos,
                format!("{section}: TargetVersion equals CurrentVersion ({target}): the deployment shifts no traffic"),
            );
        }
    }

    fn hooks(&mut self, hooks: &Val) {
        let items = match &hooks.kind {
            Kind::Null => return,
            Kind::Seq(items) => items,
            _ => {
                self.error(
                    hooks.pos,
                    format!(
                        "Hooks must be a list of one-key mappings (- BeforeAllowTraffic: FunctionName), but it is {}",
                        hooks.describe()
                    ),
                );
                return;
            }
        };
        let allowed: &[&str] = match self.platform {
            Some(p) => p.events(),
            None => ECS_EVENTS,
        };
        let platform = self.platform.map_or("an ECS or a Lambda", |p| match p {
            Platform::Ecs => "an ECS",
            Platform::Lambda => "a Lambda",
        });
        let mut seen: Vec<(String, Position)> = Vec::new();
        for item in items {
            let Some(map) = item.as_map() else {
                self.error(
                    item.pos,
                    format!(
                        "each Hooks entry must be a mapping of a lifecycle event to a Lambda function name, but one is {}",
                        item.describe()
                    ),
                );
                continue;
            };
            if map.len() != 1 {
                self.error(
                    item.pos,
                    format!(
                        "each Hooks entry names one lifecycle event, but this one has {}",
                        map.len()
                    ),
                );
            }
            for (event, function) in map {
                let Some(name) = event.as_str() else {
                    self.error(
                        event.pos,
                        format!(
                            "Hooks: lifecycle event names are strings, but this one is {}",
                            event.describe()
                        ),
                    );
                    continue;
                };
                if !allowed.contains(&name) {
                    let hint = allowed
                        .iter()
                        .find(|a| a.eq_ignore_ascii_case(name))
                        .map(|a| format!(" (did you mean {a}? event names are case-sensitive)"))
                        .unwrap_or_default();
                    self.error(
                        event.pos,
                        format!(
                            "Hooks: {name} is not a lifecycle event of {platform} deployment (hooks can run at {}){hint}",
                            allowed.join(", ")
                        ),
                    );
                } else if let Some((_, first)) = seen.iter().find(|(s, _)| s == name) {
                    self.error(
                        event.pos,
                        format!(
                            "Hooks: {name} is given twice (first at line {}, column {}); each event runs one hook function",
                            first.line, first.column
                        ),
                    );
                } else {
                    seen.push((name.to_owned(), event.pos));
                }
                if function.as_str().is_none_or(|f| f.trim().is_empty()) {
                    self.error(
                        if function.is_null() { event.pos } else { function.pos },
                        format!(
                            "Hooks: {name} must name a Lambda function (its name or ARN), but it is {}",
                            if function.as_str().is_some() { "blank" } else { function.describe() }
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec2_appspec_is_not_a_platform_appspec() {
        assert!(check("version: 0.0\nos: linux\n").is_none());
        assert!(check("not: [valid").is_none());
        assert!(check("- a list\n").is_none());
    }

    #[test]
    fn json_is_read_with_positions() {
        let text = "{\n  \"version\": 0.0,\n  \"Resources\": [\n    { \"f\": { \"Type\": \"AWS::Lambda::Function\",\n      \"Properties\": { \"Name\": \"f\", \"Alias\": \"live\", \"CurrentVersion\": \"1\", \"TargetVersion\": \"x\" } } }\n  ]\n}\n";
        let c = check(text).expect("platform appspec");
        assert_eq!(c.platform, Some(Platform::Lambda));
        assert_eq!(c.diagnostics.len(), 1, "{:?}", c.diagnostics);
        let d = &c.diagnostics[0];
        assert_eq!(
            d.position,
            Some(Position {
                line: 5,
                column: 93
            })
        );
        assert!(
            d.message
                .contains("TargetVersion must be a published version number")
        );
    }
}
