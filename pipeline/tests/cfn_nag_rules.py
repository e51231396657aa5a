"""cfn-nag's rules that apply to the resource types in pipeline/templates, in Python.

cfn-nag (https://github.com/stelligent/cfn_nag, a Ruby gem) is what seed 003 runs before each
deployment; the infrastructure pipeline's Lint stage runs it (pipeline/buildspec-infra.yml,
`cfn_nag_scan --fail-on-warnings`). Its gem host is not reachable from the development and CI
machines, so this module re-states the rules that can fire on our templates, each with the
rule's source file, and `test_cfn_nag.py` runs them on every template: a template that would fail
cfn-nag in CodeBuild fails here first.

The model follows cfn-model (https://github.com/stelligent/cfn-model, what cfn-nag parses with),
run as `cfn_nag_scan` runs it without parameter or condition files:
- every condition is true, so `Fn::If` takes its first branch and conditional resources count
  (cfn-model lib/cfn-model/parser/cfn_parser.rb `process_conditions`);
- `Ref` to a parameter or resource, `Fn::GetAtt` and `Fn::ImportValue` stay unresolved (a dict);
  `Fn::Sub` becomes its string with the references left in (`${AWS::Partition}`), `Fn::Join` is
  joined (lib/cfn-model/model/references.rb);
- a statement's `Action`/`Resource` are lists; a wildcard action is `*` or `service:*`, a
  wildcard resource is exactly `*`, a wildcard principal is any string with `*` in it
  (lib/cfn-model/model/statement.rb, principal.rb, policy_document.rb).

Suppressions are cfn-nag's own: `Metadata.cfn_nag.rules_to_suppress` on a resource (each with a
reason), and the deny list `pipeline/cfn-nag-deny-list.yml` (`--deny-list-path`) for rules that
never apply to this project.
"""

import ipaddress
import json
from pathlib import Path

import yaml

RULES_BASE = "https://github.com/stelligent/cfn_nag/blob/master/lib/cfn-nag/custom_rules/"
DENY_LIST = Path(__file__).resolve().parents[1] / "cfn-nag-deny-list.yml"


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = {"Ref": "Ref", "Condition": "Condition"}.get(suffix, f"Fn::{suffix}")
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_Loader.add_multi_constructor("!", _tag)


def load_template(path):
    return yaml.load(Path(path).read_text(), Loader=_Loader)


# ---- cfn-model's value resolution (no parameter values, every condition true) ---------------


def resolve(v):
    if isinstance(v, list):
        return [resolve(x) for x in v if x != {"Ref": "AWS::NoValue"}]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        ((k, a),) = v.items()
        if k == "Ref" or k in ("Fn::GetAtt", "Fn::ImportValue", "Fn::Transform", "Fn::Cidr"):
            return v
        if k == "Fn::If":
            return resolve(a[1])
        if k == "Fn::Sub":
            if isinstance(a, str):
                return a
            text, mapping = a
            for name, value in mapping.items():
                value = resolve(value)
                if isinstance(value, str):
                    text = text.replace("${" + name + "}", value)
            return text
        if k == "Fn::Join":
            items = resolve(a[1])
            if not isinstance(items, list):
                return v
            return a[0].join(x if isinstance(x, str) else json.dumps(x, sort_keys=True) for x in items)
    return {k: resolve(x) for k, x in v.items()}


def _list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


class Statement:
    def __init__(self, raw):
        raw = resolve(raw)
        self.effect = raw.get("Effect")
        self.actions = _list(raw.get("Action"))
        self.not_actions = _list(raw.get("NotAction"))
        self.resources = _list(raw.get("Resource"))
        self.not_resources = _list(raw.get("NotResource"))
        self.principal = raw.get("Principal")
        self.not_principal = raw.get("NotPrincipal")
        self.condition = raw.get("Condition")

    @property
    def allow(self):
        return self.effect == "Allow"

    def wildcard_actions(self):
        return [a for a in self.actions if isinstance(a, str) and (a == "*" or (a.endswith(":*") and len(a) > 2))]

    def wildcard_resources(self):
        return [r for r in self.resources if r == "*"]

    def wildcard_principal(self):
        p = self.principal
        if isinstance(p, str):
            return "*" in p
        if isinstance(p, dict):
            for value in p.values():
                if isinstance(value, str) and "*" in value:
                    return True
                if isinstance(value, list) and any(isinstance(x, str) and "*" in x for x in value):
                    return True
        return False

    def allows_action(self, action):
        """cfn-model Statement#allows_action? with wildcards: the action, `service:*`, `*`, or
        a prefix pattern such as `logs:Create*`."""
        service, name = action.split(":")
        patterns = {"*", f"{service}:*"} | {f"{service}:{name[:i]}*" for i in range(len(name))} | {action}
        return self.allow and any(a in patterns for a in self.actions)


def policy_statements(doc):
    if not isinstance(doc, dict):
        return []
    return [Statement(s) for s in _list(doc.get("Statement"))]


# ---- SPCM (W76): cfn-nag lib/cfn-nag/iam_complexity_metric/*.rb ------------------------------


def _key(x):
    return x if isinstance(x, str) else json.dumps(x, sort_keys=True)


def _action_service(a):
    if a == "*":
        return "*"
    return a.split(":")[0] if isinstance(a, str) else _key(a)


def _resource_service(r):
    if r == "*":
        return "*"
    if isinstance(r, str):
        parts = r.split(":")
        return parts[2] if len(parts) > 2 else None
    return _key(r)


def statement_metric(s):
    actions = s.actions or s.not_actions
    resources = s.resources or s.not_resources
    m = 1  # Base_Statement
    m += 1 if s.effect == "Deny" else 0
    m += 1 if s.not_actions else 0
    m += 1 if s.not_resources else 0
    a_services = [_action_service(a) for a in actions]
    r_services = [_resource_service(r) for r in resources]
    m += 2 * max(len(set(a_services + r_services) - {"*"}) - 1, 0)  # Extra_Service
    if resources != ["*"] and actions != ["*"]:
        m += len((set(r_services) - {"*"}) - (set(a_services) - {"*"}))  # Resource_Action_NotAligned
    m += 1 if "*" in a_services and len(a_services) > 1 else 0  # Mixed_Wildcard
    m += 1 if "*" in r_services and len(r_services) > 1 else 0
    cond = s.condition
    if cond:
        m += 2 * len(cond)
        m += sum(2 for op in cond if op.startswith(("ForAllValues", "ForAnyValues")))
        m += sum(1 for op in cond if op.endswith("IfExists"))
        m += 1 if "Null" in cond else 0
        for expression in cond.values():
            for value in expression.values() if isinstance(expression, dict) else []:
                for x in _list(value):
                    if isinstance(x, str):
                        stripped = x.replace("${$}", "").replace("${*}", "").replace("${?}", "")
                        if "${" in stripped and "}" in stripped.split("${", 1)[1]:
                            m += 1
    return m


def policy_metric(doc):
    return sum(statement_metric(s) for s in policy_statements(doc))


SPCM_THRESHOLD = 25


# ---- the rules -------------------------------------------------------------------------------


class Template:
    def __init__(self, path):
        self.path = Path(path)
        self.raw = load_template(path)
        self.resources = self.raw.get("Resources", {})

    def of_type(self, *types):
        for name, res in self.resources.items():
            if res.get("Type") in types:
                yield name, resolve(res.get("Properties", {}))

    def role_policies(self):
        """(role, policy name, document) of every inline policy of every role."""
        for name, props in self.of_type("AWS::IAM::Role"):
            for p in props.get("Policies", []) or []:
                if isinstance(p, dict) and "PolicyName" in p:
                    yield name, p["PolicyName"], p.get("PolicyDocument")

    def security_groups(self):
        """{group: {"ingress": [...], "egress": [...]}} with inline rules and standalone ones
        that reference the group by Ref or GetAtt (cfn-model wires both)."""
        groups = {name: {"ingress": _list(p.get("SecurityGroupIngress")), "egress": _list(p.get("SecurityGroupEgress"))}
                  for name, p in self.of_type("AWS::EC2::SecurityGroup")}
        for kind, t in (("ingress", "AWS::EC2::SecurityGroupIngress"), ("egress", "AWS::EC2::SecurityGroupEgress")):
            for _, p in self.of_type(t):
                gid = p.get("GroupId")
                target = gid.get("Ref") if isinstance(gid, dict) and "Ref" in gid else (
                    gid["Fn::GetAtt"][0] if isinstance(gid, dict) and "Fn::GetAtt" in gid else None)
                if target in groups:
                    groups[target][kind].append(p)
        return groups

    def standalone(self, t):
        return list(self.of_type(t))


def _ip4_open(rule):
    return rule.get("CidrIp") == "0.0.0.0/0"


def _ip6_open(rule):
    c = rule.get("CidrIpv6")
    return isinstance(c, str) and ipaddress.ip_network(c, strict=False).prefixlen == 0


def _ip4_range(rule):
    c = rule.get("CidrIp")
    return isinstance(c, str) and not c.endswith("/32")


def _ip6_range(rule):
    c = rule.get("CidrIpv6")
    return isinstance(c, str) and ipaddress.ip_network(c, strict=False).prefixlen != 128


def _sg_rule(t, kind, pred):
    out = [g for g, rules in t.security_groups().items() if any(pred(r) for r in rules[kind])]
    t_type = "AWS::EC2::SecurityGroupIngress" if kind == "ingress" else "AWS::EC2::SecurityGroupEgress"
    return out + [n for n, p in t.standalone(t_type) if pred(p)]


def _protocol_all(rule):
    p = rule.get("IpProtocol")
    try:
        return int(p) == -1 if isinstance(p, (int, str)) else False
    except ValueError:
        return False


def _roles_where(t, pred):
    return sorted({role for role, _, doc in t.role_policies() if any(pred(s) for s in policy_statements(doc))})


def _docs_where(t, types, key, pred):
    return [n for n, p in t.of_type(*types) if any(pred(s) for s in policy_statements(p.get(key)))]


_EXPLICIT_NAME = {  # ResourceWithExplicitNameRule.rb RESOURCE_NAME_MAPPING
    "AWS::ApiGateway::ApiKey": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CodeDeploy::DeploymentConfig": "DeploymentConfigName",
    "AWS::CodeDeploy::DeploymentGroup": "DeploymentGroupName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::EC2::SecurityGroup": "GroupName",
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::ElasticLoadBalancingV2::LoadBalancer": "Name",
    "AWS::Elasticsearch::Domain": "DomainName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::RDS::DBInstance": "DBInstanceIdentifier",
}

_LAMBDA_LOG_POLICIES = {  # LambdaFunctionCloudWatchLogsRule.rb
    "arn:aws:iam::aws:policy/CloudWatchLogsFullAccess",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole",
    "arn:aws:iam::aws:policy/AWSLambdaExecute",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaKinesisExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
}


def _lambda_without_log_permission(t):
    roles = dict(t.of_type("AWS::IAM::Role"))
    out = []
    for name, p in t.of_type("AWS::Lambda::Function"):
        role = p.get("Role")
        role_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else (
            role.get("Ref") if isinstance(role, dict) else None)
        if role_id not in roles:
            continue  # cfn-model: role_object is nil for a role outside the template; not flagged
        rp = roles[role_id]
        inline = any(
            s.allows_action("logs:CreateLogGroup") and s.allows_action("logs:CreateLogStream") and s.allows_action("logs:PutLogEvents")
            for pol in rp.get("Policies", []) or [] for s in policy_statements(pol.get("PolicyDocument"))
        )
        managed = bool(set(x for x in rp.get("ManagedPolicyArns", []) or [] if isinstance(x, str)) & _LAMBDA_LOG_POLICIES)
        if not inline and not managed:
            out.append(name)
    return out


def _spcm(t):
    return sorted({role for role, _, doc in t.role_policies() if policy_metric(doc) >= SPCM_THRESHOLD}
                  | {n for n, p in t.of_type("AWS::IAM::Policy") if policy_metric(p.get("PolicyDocument")) >= SPCM_THRESHOLD})


def _alb_without_access_logs(t):
    out = []
    for n, p in t.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer"):
        attrs = p.get("LoadBalancerAttributes")
        entry = next((a for a in attrs or [] if a.get("Key") == "access_logs.s3.enabled"), None)
        if entry is None or str(entry.get("Value")).lower() != "true":
            out.append(n)
    return out


_WEAK_TLS = {"ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS-1-0-2015-04", "ELBSecurityPolicy-TLS-1-1-2017-01",
             "ELBSecurityPolicy-FS-2018-06", "ELBSecurityPolicy-FS-1-1-2019-08", "ELBSecurityPolicy-2015"}


def _bucket_without_policy(t):
    policies = [p.get("Bucket") for _, p in t.of_type("AWS::S3::BucketPolicy")]
    out = []
    for n, p in t.of_type("AWS::S3::Bucket"):
        if not any((isinstance(b, dict) and b.get("Ref") == n) or (p.get("BucketName") is not None and b == p.get("BucketName")) for b in policies):
            out.append(n)
    return out


IAM_DOC_TYPES = ("AWS::IAM::Policy",)
MANAGED = ("AWS::IAM::ManagedPolicy",)

# (id, source file, what it finds, function(template) -> [logical ids])
RULES = [
    ("F2", "IamRoleWildcardActionOnTrustPolicyRule.rb", "IAM role trust policy allows * action",
     lambda t: [n for n, p in t.of_type("AWS::IAM::Role") if any(s.allow and s.wildcard_actions() for s in policy_statements(p.get("AssumeRolePolicyDocument")))]),
    ("F3", "IamRoleWildcardActionOnPermissionsPolicyRule.rb", "IAM role permissions allow * action",
     lambda t: _roles_where(t, lambda s: s.allow and s.wildcard_actions())),
    ("F4", "IamPolicyWildcardActionRule.rb", "IAM policy allows * action",
     lambda t: _docs_where(t, IAM_DOC_TYPES, "PolicyDocument", lambda s: s.allow and s.wildcard_actions())),
    ("F5", "IamManagedPolicyWildcardActionRule.rb", "IAM managed policy allows * action",
     lambda t: _docs_where(t, MANAGED, "PolicyDocument", lambda s: s.allow and s.wildcard_actions())),
    ("F6", "IamRoleNotPrincipalOnTrustPolicyRule.rb", "IAM role trust policy allows NotPrincipal",
     lambda t: [n for n, p in t.of_type("AWS::IAM::Role") if any(s.allow and s.not_principal is not None for s in policy_statements(p.get("AssumeRolePolicyDocument")))]),
    ("F7", "SqsQueuePolicyNotPrincipalRule.rb", "SQS queue policy allows NotPrincipal",
     lambda t: _docs_where(t, ("AWS::SQS::QueuePolicy",), "PolicyDocument", lambda s: s.allow and s.not_principal is not None)),
    ("F8", "SnsTopicPolicyNotPrincipalRule.rb", "SNS topic policy allows NotPrincipal",
     lambda t: _docs_where(t, ("AWS::SNS::TopicPolicy",), "PolicyDocument", lambda s: s.allow and s.not_principal is not None)),
    ("F9", "S3BucketPolicyNotPrincipalRule.rb", "S3 bucket policy allows NotPrincipal",
     lambda t: _docs_where(t, ("AWS::S3::BucketPolicy",), "PolicyDocument", lambda s: s.allow and s.not_principal is not None)),
    ("F13", "LambdaPermissionWildcardPrincipalRule.rb", "Lambda permission with a * principal",
     lambda t: [n for n, p in t.of_type("AWS::Lambda::Permission") if isinstance(p.get("Principal"), str) and "*" in p["Principal"]]),
    ("F15", "S3BucketPolicyWildcardActionRule.rb", "S3 bucket policy allows * action",
     lambda t: _docs_where(t, ("AWS::S3::BucketPolicy",), "PolicyDocument", lambda s: s.allow and s.wildcard_actions())),
    ("F16", "S3BucketPolicyWildcardPrincipalRule.rb", "S3 bucket policy allows * principal",
     lambda t: _docs_where(t, ("AWS::S3::BucketPolicy",), "PolicyDocument", lambda s: s.allow and s.wildcard_principal())),
    ("F18", "SnsTopicPolicyWildcardPrincipalRule.rb", "SNS topic policy allows * principal",
     lambda t: _docs_where(t, ("AWS::SNS::TopicPolicy",), "PolicyDocument", lambda s: s.allow and s.wildcard_principal())),
    ("F19", "KMSKeyRotationRule.rb", "KMS key without EnableKeyRotation",
     lambda t: [n for n, p in t.of_type("AWS::KMS::Key") if str(p.get("EnableKeyRotation")).lower() != "true"]),
    ("F20", "SqsQueuePolicyWildcardActionRule.rb", "SQS queue policy allows * action",
     lambda t: _docs_where(t, ("AWS::SQS::QueuePolicy",), "PolicyDocument", lambda s: s.allow and s.wildcard_actions())),
    ("F21", "SqsQueuePolicyWildcardPrincipalRule.rb", "SQS queue policy allows * principal",
     lambda t: _docs_where(t, ("AWS::SQS::QueuePolicy",), "PolicyDocument", lambda s: s.allow and s.wildcard_principal())),
    ("F38", "IamRolePassRoleWildcardResourceRule.rb", "IAM role allows iam:PassRole on *",
     lambda t: _roles_where(t, lambda s: s.allow and s.allows_action("iam:PassRole") and s.wildcard_resources())),
    ("F39", "IamPolicyPassRoleWildcardResourceRule.rb", "IAM policy allows iam:PassRole on *",
     lambda t: _docs_where(t, IAM_DOC_TYPES, "PolicyDocument", lambda s: s.allow and s.allows_action("iam:PassRole") and s.wildcard_resources())),
    ("F40", "IamManagedPolicyPassRoleWildcardResourceRule.rb", "IAM managed policy allows iam:PassRole on *",
     lambda t: _docs_where(t, MANAGED, "PolicyDocument", lambda s: s.allow and s.allows_action("iam:PassRole") and s.wildcard_resources())),
    ("F76", "KMSKeyWildcardPrincipalRule.rb", "KMS key policy allows * principal",
     lambda t: _docs_where(t, ("AWS::KMS::Key",), "KeyPolicy", lambda s: s.allow and s.wildcard_principal())),
    ("F1000", "SecurityGroupMissingEgressRule.rb", "security group without egress rules (all outbound allowed)",
     lambda t: [g for g, rules in t.security_groups().items() if not rules["egress"]]),
    ("W2", "SecurityGroupIngressOpenToWorldRule.rb", "security group ingress open to the world",
     lambda t: _sg_rule(t, "ingress", lambda r: _ip4_open(r) or _ip6_open(r))),
    ("W5", "SecurityGroupEgressOpenToWorldRule.rb", "security group egress open to the world",
     lambda t: _sg_rule(t, "egress", lambda r: _ip4_open(r) or _ip6_open(r))),
    ("W9", "SecurityGroupIngressCidrNon32Rule.rb", "security group ingress CIDR not /32",
     lambda t: _sg_rule(t, "ingress", lambda r: _ip4_range(r) or _ip6_range(r))),
    ("W11", "IamRoleWildcardResourceOnPermissionsPolicyRule.rb", "IAM role permissions allow * resource",
     lambda t: _roles_where(t, lambda s: s.allow and s.wildcard_resources())),
    ("W12", "IamPolicyWildcardResourceRule.rb", "IAM policy allows * resource",
     lambda t: _docs_where(t, IAM_DOC_TYPES, "PolicyDocument", lambda s: s.allow and s.wildcard_resources())),
    ("W13", "IamManagedPolicyWildcardResourceRule.rb", "IAM managed policy allows * resource",
     lambda t: _docs_where(t, MANAGED, "PolicyDocument", lambda s: s.allow and s.wildcard_resources())),
    ("W14", "IamRoleNotActionOnTrustPolicyRule.rb", "IAM role trust policy allows NotAction",
     lambda t: [n for n, p in t.of_type("AWS::IAM::Role") if any(s.allow and s.not_actions for s in policy_statements(p.get("AssumeRolePolicyDocument")))]),
    ("W15", "IamRoleNotActionOnPermissionsPolicyRule.rb", "IAM role permissions allow NotAction",
     lambda t: _roles_where(t, lambda s: s.allow and s.not_actions)),
    ("W17", "IamManagedPolicyNotActionRule.rb", "IAM managed policy allows NotAction",
     lambda t: _docs_where(t, MANAGED, "PolicyDocument", lambda s: s.allow and s.not_actions)),
    ("W19", "SnsTopicPolicyNotActionRule.rb", "SNS topic policy allows NotAction",
     lambda t: _docs_where(t, ("AWS::SNS::TopicPolicy",), "PolicyDocument", lambda s: s.allow and s.not_actions)),
    ("W20", "S3BucketPolicyNotActionRule.rb", "S3 bucket policy allows NotAction",
     lambda t: _docs_where(t, ("AWS::S3::BucketPolicy",), "PolicyDocument", lambda s: s.allow and s.not_actions)),
    ("W21", "IamRoleNotResourceOnPermissionsPolicyRule.rb", "IAM role permissions allow NotResource",
     lambda t: _roles_where(t, lambda s: s.allow and s.not_resources)),
    ("W23", "IamManagedPolicyNotResourceRule.rb", "IAM managed policy allows NotResource",
     lambda t: _docs_where(t, MANAGED, "PolicyDocument", lambda s: s.allow and s.not_resources)),
    ("W24", "LambdaPermissionInvokeFunctionActionRule.rb", "Lambda permission for an action other than InvokeFunction",
     lambda t: [n for n, p in t.of_type("AWS::Lambda::Permission") if p.get("Action") != "lambda:InvokeFunction"]),
    ("W27", "SecurityGroupIngressPortRangeRule.rb", "security group ingress with a port range",
     lambda t: _sg_rule(t, "ingress", lambda r: r.get("FromPort") != r.get("ToPort"))),
    ("W28", "ResourceWithExplicitNameRule.rb", "resource with an explicit name",
     lambda t: [n for n, r in t.resources.items() if r.get("Type") in _EXPLICIT_NAME and (r.get("Properties") or {}).get(_EXPLICIT_NAME[r["Type"]]) is not None]),
    ("W29", "SecurityGroupEgressPortRangeRule.rb", "security group egress with a port range",
     lambda t: _sg_rule(t, "egress", lambda r: r.get("FromPort") != r.get("ToPort"))),
    ("W32", "CodeBuildEncryptionKeyRule.rb", "CodeBuild project without EncryptionKey",
     lambda t: [n for n, p in t.of_type("AWS::CodeBuild::Project") if p.get("EncryptionKey") is None]),
    ("W35", "S3BucketAccessLoggingRule.rb", "S3 bucket without access logging",
     lambda t: [n for n, p in t.of_type("AWS::S3::Bucket") if p.get("LoggingConfiguration") is None]),
    ("W36", "SecurityGroupRuleDescriptionRule.rb", "security group rule without a description",
     lambda t: [n for n, p in t.of_type("AWS::EC2::SecurityGroup")
                if any(not r.get("Description") for r in _list(p.get("SecurityGroupIngress")) + _list(p.get("SecurityGroupEgress")))]
     + [n for n, p in t.standalone("AWS::EC2::SecurityGroupIngress") + t.standalone("AWS::EC2::SecurityGroupEgress") if not p.get("Description")]),
    ("W40", "SecurityGroupEgressAllProtocolsRule.rb", "security group egress with IpProtocol -1",
     lambda t: _sg_rule(t, "egress", lambda r: _protocol_all(r) and r.get("CidrIp") != "127.0.0.1/32")),
    ("W41", "S3BucketEncryptionSetRule.rb", "S3 bucket without encryption",
     lambda t: [n for n, p in t.of_type("AWS::S3::Bucket") if p.get("BucketEncryption") is None]),
    ("W42", "SecurityGroupIngressAllProtocolsRule.rb", "security group ingress with IpProtocol -1",
     lambda t: _sg_rule(t, "ingress", _protocol_all)),
    ("W43", "IamRoleAdministratorAccessPolicyRule.rb", "IAM role with AdministratorAccess",
     lambda t: [n for n, p in t.of_type("AWS::IAM::Role") if any(isinstance(a, str) and "arn:aws:iam::aws:policy/AdministratorAccess" in a for a in p.get("ManagedPolicyArns", []) or [])]),
    ("W44", "IamRoleElevatedManagedPolicyRule.rb", "IAM role with PowerUserAccess or IAMFullAccess",
     lambda t: [n for n, p in t.of_type("AWS::IAM::Role") if any(isinstance(a, str) and ("policy/PowerUserAccess" in a or "policy/IAMFullAccess" in a) for a in p.get("ManagedPolicyArns", []) or [])]),
    ("W47", "SnsTopicKmsMasterKeyIdRule.rb", "SNS topic without KmsMasterKeyId",
     lambda t: [n for n, p in t.of_type("AWS::SNS::Topic") if p.get("KmsMasterKeyId") is None]),
    ("W48", "SqsQueueKmsMasterKeyIdRule.rb", "SQS queue without KmsMasterKeyId",
     lambda t: [n for n, p in t.of_type("AWS::SQS::Queue") if p.get("KmsMasterKeyId") is None]),
    ("W51", "MissingBucketPolicyRule.rb", "S3 bucket without a bucket policy", _bucket_without_policy),
    ("W52", "ElasticLoadBalancerV2AccessLoggingRule.rb", "ALB without access logs", _alb_without_access_logs),
    ("W55", "ElasticLoadBalancerV2ListenerSslPolicyRule.rb", "HTTPS listener without a TLS 1.2 policy",
     lambda t: [n for n, p in t.of_type("AWS::ElasticLoadBalancingV2::Listener") if p.get("Protocol") in ("HTTPS", "TLS") and (p.get("SslPolicy") is None or p.get("SslPolicy") in _WEAK_TLS)]),
    ("W56", "ElasticLoadBalancerV2ListenerProtocolRule.rb", "HTTP listener",
     lambda t: [n for n, p in t.of_type("AWS::ElasticLoadBalancingV2::Listener") if p.get("Protocol") == "HTTP"]),
    ("W58", "LambdaFunctionCloudWatchLogsRule.rb", "Lambda function whose role cannot write CloudWatch Logs", _lambda_without_log_permission),
    ("W76", "SPCMRule.rb", f"IAM policy complexity (SPCM) of {SPCM_THRESHOLD} or more", _spcm),
    ("W84", "LogsLogGroupEncryptedRule.rb", "log group without KmsKeyId",
     lambda t: [n for n, p in t.of_type("AWS::Logs::LogGroup") if p.get("KmsKeyId") is None]),
    ("W86", "LogsLogGroupRetentionRule.rb", "log group without RetentionInDays",
     lambda t: [n for n, p in t.of_type("AWS::Logs::LogGroup") if p.get("RetentionInDays") is None]),
    ("W89", "LambdaFunctionInsideVPCRule.rb", "Lambda function outside a VPC",
     lambda t: [n for n, p in t.of_type("AWS::Lambda::Function") if p.get("VpcConfig") is None]),
    ("W92", "LambdaFunctionReservedConcurrentExecutionsRule.rb", "Lambda function without ReservedConcurrentExecutions",
     lambda t: [n for n, p in t.of_type("AWS::Lambda::Function") if p.get("ReservedConcurrentExecutions") is None]),
]


def deny_list():
    """{rule id: reason} of pipeline/cfn-nag-deny-list.yml (cfn_nag_scan --deny-list-path)."""
    doc = yaml.safe_load(DENY_LIST.read_text())
    return {r["id"]: r.get("reason", "") for r in doc.get("RulesToSuppress", [])}


def suppressions(resource):
    meta = (resource.get("Metadata") or {}).get("cfn_nag") or {}
    return {r["id"]: r.get("reason", "") for r in meta.get("rules_to_suppress", [])}


def scan(path, honour_suppressions=True):
    """[(rule id, logical id, text)] cfn-nag would report for the template at `path`."""
    t = Template(path)
    denied = deny_list() if honour_suppressions else {}
    out = []
    for rule_id, _source, text, find in RULES:
        if rule_id in denied:
            continue
        for logical in sorted(set(find(t))):
            if honour_suppressions and rule_id in suppressions(t.resources.get(logical, {})):
                continue
            out.append((rule_id, logical, text))
    return out
