//! Where the host-commands service lives and how to address it (agent-behaviour.md §1.1, §1.3):
//! the endpoint URL, the SigV4 signing name and the `X-Amz-Target` prefix. Pure functions: the
//! caller gathers the inputs (configuration, IMDS answers, whether the host is on-premises).

use thiserror::Error;

/// The service model variant: the default one, or the "secure" one selected by
/// `:enable_auth_policy: true`. Each fixes the signing name and the target prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceVariant {
    /// `CodeDeployCommand` (apiVersion 2014-10-06).
    Default,
    /// `CodeDeployCommandSecure` (apiVersion 2019-11-11).
    Secure,
}

impl ServiceVariant {
    /// The variant the `enable_auth_policy` configuration key selects.
    pub fn from_auth_policy(enable_auth_policy: bool) -> Self {
        if enable_auth_policy {
            Self::Secure
        } else {
            Self::Default
        }
    }

    /// The SigV4 signing name (the model's endpointPrefix).
    pub fn signing_name(self) -> &'static str {
        match self {
            Self::Default => "codedeploy-commands",
            Self::Secure => "codedeploy-commands-secure",
        }
    }

    /// The `X-Amz-Target` prefix; the header is `<prefix>.<Operation>`.
    pub fn target_prefix(self) -> &'static str {
        match self {
            Self::Default => "CodeDeployCommandService_v20141006",
            Self::Secure => "CodeDeployCommandService",
        }
    }
}

/// What IMDS said, when it answered (`InstanceMetadata.imds_supported?`). Either value may be
/// missing: the AWS agent's `region`/`domain` lookups return nil on error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImdsLocation<'a> {
    /// The `region` of the instance identity document.
    pub region: Option<&'a str>,
    /// `/latest/meta-data/services/domain`, e.g. `amazonaws.com`.
    pub domain: Option<&'a str>,
}

/// Everything endpoint resolution depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointInputs<'a> {
    /// `:deploy_control_endpoint:`; used verbatim when set.
    pub deploy_control_endpoint: Option<&'a str>,
    /// `:enable_auth_policy:` adds `-secure` to the label.
    pub enable_auth_policy: bool,
    /// `:use_fips_mode:` adds `-fips` to the label.
    pub use_fips_mode: bool,
    /// The client's configured region (`AWS_REGION`, else the IMDS region). Also the signing
    /// region.
    pub region: &'a str,
    /// `Some` when IMDS answers; its region and domain then win for the URL.
    pub imds: Option<ImdsLocation<'a>>,
    /// The on-premises configuration file is readable: the IMDS domain and region are checked
    /// against the partition table.
    pub on_premises: bool,
}

/// Why no endpoint could be built. The messages are the AWS agent's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    /// On-premises host whose IMDS domain is not in the partition table.
    #[error("Unknown domain: {0}")]
    UnknownDomain(String),
    /// On-premises host whose IMDS region does not match the domain's pattern.
    #[error("Invalid region: {0}")]
    InvalidRegion(String),
    /// Nothing to build a URL from (no override, no region anywhere). Ours.
    #[error(
        "no region for the CodeDeploy endpoint: set AWS_REGION, the on-premises `region`, or :deploy_control_endpoint:"
    )]
    NoRegion,
    /// `:deploy_control_endpoint:` with a scheme other than https/http. Ours (v2 refuses too).
    #[error(
        "deploy_control_endpoint {0} is not an https:// URL: set it to https://host[:port] (http:// is accepted, with a warning, for tests and local sidecars)"
    )]
    UnsupportedScheme(String),
    /// `:use_fips_mode:` in a Region without FIPS endpoints. Ours (v2 refuses too).
    #[error(
        "use_fips_mode is set but Region {0} has no FIPS endpoints for CodeDeploy (they exist in {regions}): remove :use_fips_mode: or set it to false, or run in one of those Regions",
        regions = FIPS_REGIONS.join(", ")
    )]
    FipsUnavailable(String),
}

/// The Regions with `-fips` CodeDeploy endpoints (as AWS's v2 agent lists them); the
/// `us-gov-*` Regions have them too.
pub const FIPS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-*",
];

/// Whether `region` has FIPS endpoints ([`FIPS_REGIONS`]).
pub fn region_has_fips(region: &str) -> bool {
    region.starts_with("us-gov-") || FIPS_REGIONS.contains(&region)
}

/// The DNS label of the service: `codedeploy-commands[-secure][-fips]`.
pub fn service_label(enable_auth_policy: bool, use_fips_mode: bool) -> String {
    let mut label = String::from("codedeploy-commands");
    if enable_auth_policy {
        label.push_str("-secure");
    }
    if use_fips_mode {
        label.push_str("-fips");
    }
    label
}

/// The domain suffix for a region when IMDS does not say: `amazonaws.eu` for exactly
/// `eusc-de-east-1`, `amazonaws.com.cn` for `cn-*`, else `amazonaws.com`.
pub fn domain_for_region(region: &str) -> &'static str {
    if region == "eusc-de-east-1" {
        "amazonaws.eu"
    } else if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// `partition-region-pattern.json`: whether `region` is valid for `domain`, or `None` when
/// the domain is unknown. The table's regexes are `^[0-9a-z-]{1,20}$` (`amazonaws.com`,
/// `amazonaws.eu`) and `^cn\-\w+\-\d+$` (`amazonaws.com.cn`); they are matched here against
/// the whole string.
pub fn region_matches_partition(domain: &str, region: &str) -> Option<bool> {
    match domain {
        "amazonaws.com" | "amazonaws.eu" => Some(
            (1..=20).contains(&region.len())
                && region
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-'),
        ),
        "amazonaws.com.cn" => Some(matches_cn_pattern(region)),
        _ => None,
    }
}

/// `^cn\-\w+\-\d+$`: `\w` has no `-`, so the word part runs to the last `-`.
fn matches_cn_pattern(region: &str) -> bool {
    let Some(rest) = region.strip_prefix("cn-") else {
        return false;
    };
    let Some((word, digits)) = rest.rsplit_once('-') else {
        return false;
    };
    !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves the endpoint URL (§1.3). An override is returned verbatim; a plain `http://`
/// override is allowed (tests, local sidecars) but warned about.
pub fn resolve(inputs: &EndpointInputs<'_>) -> Result<String, EndpointError> {
    if inputs.use_fips_mode {
        let region = inputs.imds.and_then(|i| i.region).unwrap_or(inputs.region);
        if !region_has_fips(region) {
            return Err(EndpointError::FipsUnavailable(region.to_owned()));
        }
    }
    if let Some(url) = inputs.deploy_control_endpoint {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("https" | "http") => {}
            _ => return Err(EndpointError::UnsupportedScheme(url.to_owned())),
        }
        if scheme.as_deref() == Some("http") {
            tracing::warn!(
                endpoint = url,
                "deploy_control_endpoint uses plain http: requests are not encrypted"
            );
        }
        tracing::info!("CodeDeploy endpoint: {url}");
        return Ok(url.to_owned());
    }
    let label = service_label(inputs.enable_auth_policy, inputs.use_fips_mode);
    let (region, domain) = match inputs.imds {
        Some(imds) => {
            if inputs.on_premises {
                let domain = imds.domain.unwrap_or_default();
                let region = imds.region.unwrap_or_default();
                match region_matches_partition(domain, region) {
                    None => return Err(EndpointError::UnknownDomain(domain.to_owned())),
                    Some(false) => return Err(EndpointError::InvalidRegion(region.to_owned())),
                    Some(true) => {}
                }
            }
            let region = imds.region.unwrap_or(inputs.region);
            let domain = imds.domain.unwrap_or_else(|| domain_for_region(region));
            (region, domain)
        }
        None => (inputs.region, domain_for_region(inputs.region)),
    };
    if region.is_empty() {
        return Err(EndpointError::NoRegion);
    }
    let url = format!("https://{label}.{region}.{domain}");
    tracing::info!("CodeDeploy endpoint: {url}");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fips_mode_is_refused_outside_fips_regions_and_schemes_are_checked() {
        let mut i = inputs("eu-west-1");
        i.use_fips_mode = true;
        assert_eq!(
            resolve(&i),
            Err(EndpointError::FipsUnavailable("eu-west-1".into()))
        );
        i.region = "us-gov-west-1";
        assert!(resolve(&i).is_ok());
        let mut i = inputs("eu-west-1");
        i.deploy_control_endpoint = Some("ftp://127.0.0.1:1");
        assert!(matches!(
            resolve(&i),
            Err(EndpointError::UnsupportedScheme(_))
        ));
        i.deploy_control_endpoint = Some("127.0.0.1:1");
        assert!(matches!(
            resolve(&i),
            Err(EndpointError::UnsupportedScheme(_))
        ));
        i.deploy_control_endpoint = Some("HTTPS://example.com");
        assert!(resolve(&i).is_ok());
    }

    fn inputs(region: &str) -> EndpointInputs<'_> {
        EndpointInputs {
            deploy_control_endpoint: None,
            enable_auth_policy: false,
            use_fips_mode: false,
            region,
            imds: None,
            on_premises: false,
        }
    }

    fn imds<'a>(region: &'a str, domain: &'a str) -> Option<ImdsLocation<'a>> {
        Some(ImdsLocation {
            region: Some(region),
            domain: Some(domain),
        })
    }

    #[test]
    fn labels_and_urls_from_the_codedeploy_control_test_list() {
        // (auth policy, fips, expected URL), IMDS answering us-west-2 / amazonaws.com.
        let table = [
            (
                false,
                false,
                "https://codedeploy-commands.us-west-2.amazonaws.com",
            ),
            (
                false,
                true,
                "https://codedeploy-commands-fips.us-west-2.amazonaws.com",
            ),
            (
                true,
                false,
                "https://codedeploy-commands-secure.us-west-2.amazonaws.com",
            ),
            (
                true,
                true,
                "https://codedeploy-commands-secure-fips.us-west-2.amazonaws.com",
            ),
        ];
        for (auth, fips, want) in table {
            let i = EndpointInputs {
                enable_auth_policy: auth,
                use_fips_mode: fips,
                imds: imds("us-west-2", "amazonaws.com"),
                ..inputs("us-west-2")
            };
            assert_eq!(resolve(&i).as_deref(), Ok(want), "auth={auth} fips={fips}");
            // Same answer without IMDS.
            let i = EndpointInputs { imds: None, ..i };
            assert_eq!(
                resolve(&i).as_deref(),
                Ok(want),
                "no imds auth={auth} fips={fips}"
            );
        }
    }

    #[test]
    fn no_imds_china_region_uses_the_cn_domain() {
        assert_eq!(
            resolve(&inputs("cn-north-1")).as_deref(),
            Ok("https://codedeploy-commands.cn-north-1.amazonaws.com.cn")
        );
        assert_eq!(
            resolve(&inputs("cn-northwest-1")).as_deref(),
            Ok("https://codedeploy-commands.cn-northwest-1.amazonaws.com.cn")
        );
    }

    #[test]
    fn no_imds_eusc_uses_the_eu_domain() {
        assert_eq!(
            resolve(&inputs("eusc-de-east-1")).as_deref(),
            Ok("https://codedeploy-commands.eusc-de-east-1.amazonaws.eu")
        );
        // Only that exact region.
        assert_eq!(domain_for_region("eusc-de-west-1"), "amazonaws.com");
        assert_eq!(domain_for_region("us-gov-west-1"), "amazonaws.com");
    }

    #[test]
    fn override_is_used_verbatim() {
        let i = EndpointInputs {
            deploy_control_endpoint: Some("https://tempuri"),
            enable_auth_policy: true,
            use_fips_mode: true,
            imds: imds("us-west-2", "amazonaws.com"),
            on_premises: true,
            ..inputs("us-west-2")
        };
        assert_eq!(resolve(&i).as_deref(), Ok("https://tempuri"));
        let i = EndpointInputs {
            deploy_control_endpoint: Some("http://127.0.0.1:8080/"),
            ..i
        };
        assert_eq!(resolve(&i).as_deref(), Ok("http://127.0.0.1:8080/"));
    }

    #[test]
    fn imds_region_and_domain_win_over_the_configured_region() {
        let i = EndpointInputs {
            imds: imds("eu-west-1", "amazonaws.com"),
            ..inputs("us-east-1")
        };
        assert_eq!(
            resolve(&i).as_deref(),
            Ok("https://codedeploy-commands.eu-west-1.amazonaws.com")
        );
        // An IMDS domain wins even where the region rule would say otherwise.
        let i = EndpointInputs {
            imds: imds("us-isof-south-1", "csp.hci.ic.gov"),
            ..inputs("us-isof-south-1")
        };
        assert_eq!(
            resolve(&i).as_deref(),
            Ok("https://codedeploy-commands.us-isof-south-1.csp.hci.ic.gov")
        );
        // A missing IMDS domain falls back to the region rule.
        let i = EndpointInputs {
            imds: Some(ImdsLocation {
                region: Some("cn-north-1"),
                domain: None,
            }),
            ..inputs("us-east-1")
        };
        assert_eq!(
            resolve(&i).as_deref(),
            Ok("https://codedeploy-commands.cn-north-1.amazonaws.com.cn")
        );
    }

    #[test]
    fn on_premises_checks_the_partition_table() {
        let on_prem = |region: &'static str, domain: &'static str| EndpointInputs {
            imds: imds(region, domain),
            on_premises: true,
            ..inputs("us-east-1")
        };
        assert_eq!(
            resolve(&on_prem("us-east-1", "amazonaws.com")).as_deref(),
            Ok("https://codedeploy-commands.us-east-1.amazonaws.com")
        );
        assert_eq!(
            resolve(&on_prem("eusc-de-east-1", "amazonaws.eu")).as_deref(),
            Ok("https://codedeploy-commands.eusc-de-east-1.amazonaws.eu")
        );
        assert_eq!(
            resolve(&on_prem("cn-north-1", "amazonaws.com.cn")).as_deref(),
            Ok("https://codedeploy-commands.cn-north-1.amazonaws.com.cn")
        );
        let err = resolve(&on_prem("us-east-1", "example.com")).unwrap_err();
        assert_eq!(err.to_string(), "Unknown domain: example.com");
        let err = resolve(&on_prem("us-east-1", "amazonaws.com.cn")).unwrap_err();
        assert_eq!(err.to_string(), "Invalid region: us-east-1");
        let err = resolve(&on_prem("US-EAST-1", "amazonaws.com")).unwrap_err();
        assert_eq!(err.to_string(), "Invalid region: US-EAST-1");
        let err = resolve(&on_prem("a-very-long-region-name-1", "amazonaws.eu")).unwrap_err();
        assert_eq!(err.to_string(), "Invalid region: a-very-long-region-name-1");
        // Missing IMDS values are reported empty, as the AWS agent interpolates nil.
        let i = EndpointInputs {
            imds: Some(ImdsLocation::default()),
            on_premises: true,
            ..inputs("us-east-1")
        };
        assert_eq!(resolve(&i).unwrap_err().to_string(), "Unknown domain: ");
        // Without IMDS the table is not consulted.
        let i = EndpointInputs {
            on_premises: true,
            ..inputs("cn-north-1")
        };
        assert_eq!(
            resolve(&i).as_deref(),
            Ok("https://codedeploy-commands.cn-north-1.amazonaws.com.cn")
        );
    }

    #[test]
    fn partition_patterns() {
        let table = [
            ("amazonaws.com", "us-west-2", Some(true)),
            ("amazonaws.com", "", Some(false)),
            ("amazonaws.com", "us_west_2", Some(false)),
            ("amazonaws.com", "12345678901234567890", Some(true)),
            ("amazonaws.com", "123456789012345678901", Some(false)),
            ("amazonaws.eu", "eusc-de-east-1", Some(true)),
            ("amazonaws.com.cn", "cn-north-1", Some(true)),
            ("amazonaws.com.cn", "cn-north_west-12", Some(true)),
            ("amazonaws.com.cn", "cn-north-west-1", Some(false)),
            ("amazonaws.com.cn", "cn--1", Some(false)),
            ("amazonaws.com.cn", "cn-north-", Some(false)),
            ("amazonaws.com.cn", "cn-north", Some(false)),
            ("amazonaws.com.cn", "us-east-1", Some(false)),
            ("amazonaws.org", "us-east-1", None),
        ];
        for (domain, region, want) in table {
            assert_eq!(
                region_matches_partition(domain, region),
                want,
                "{domain} {region}"
            );
        }
    }

    #[test]
    fn no_region_is_an_error() {
        assert_eq!(resolve(&inputs("")), Err(EndpointError::NoRegion));
    }

    #[test]
    fn item_28_secure_fips_endpoint_signing_name_and_target() {
        let i = EndpointInputs {
            enable_auth_policy: true,
            use_fips_mode: true,
            ..inputs("us-west-2")
        };
        assert_eq!(
            resolve(&i).as_deref(),
            Ok("https://codedeploy-commands-secure-fips.us-west-2.amazonaws.com")
        );
        let v = ServiceVariant::from_auth_policy(true);
        assert_eq!(v.signing_name(), "codedeploy-commands-secure");
        assert_eq!(v.target_prefix(), "CodeDeployCommandService");

        assert_eq!(
            resolve(&inputs("us-west-2")).as_deref(),
            Ok("https://codedeploy-commands.us-west-2.amazonaws.com")
        );
        let v = ServiceVariant::from_auth_policy(false);
        assert_eq!(v.signing_name(), "codedeploy-commands");
        assert_eq!(v.target_prefix(), "CodeDeployCommandService_v20141006");
    }
}
