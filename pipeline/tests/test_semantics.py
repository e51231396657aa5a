"""Checks that encode AWS's documented semantics, each with its source.

cfn-lint and checkov validate shapes; these check what the services will do with the
templates: where CodePipeline writes artifacts versus who may write there, which principals a
KMS key policy must name for each service that uses the key, which AWS::CodeDeploy::DeploymentGroup
shapes CloudFormation refuses, that what each pipeline deploys is a valid CodeDeploy bundle, and
an IAM linter (parliament, from PyPI) over every identity policy.

A missing tool (codedeploy-agent binary, parliament) skips on a developer's machine and fails
under CI=true.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

from test_templates import _Tag, load, statements, as_list

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
BUCKET = "artifact-bucket"
CI = os.environ.get("CI") == "true"


def need(test, ok, what):
    """Skip (developer) or fail (CI=true) when a tool is missing."""
    if not ok:
        if CI:
            test.fail(f"{what} is missing and CI=true: install it (scripts/test does)")
        test.skipTest(f"{what} is missing")


class Ctx:
    """Concrete values for one deployment: enough to turn intrinsics into strings."""

    def __init__(self, doc, project="codedeploy-agent", region="us-east-1", params=None):
        self.doc, self.project, self.region = doc, project, region
        self.params = {"ProjectName": project, **(params or {})}

    def imports(self, name):
        p = self.project
        table = {
            f"{p}-ArtifactBucket": BUCKET,
            f"{p}-ArtifactBucketArn": f"arn:aws:s3:::{BUCKET}",
            f"{p}-KeyArn": f"arn:aws:kms:{self.region}:{ACCOUNT}:key/k",
            f"{p}-AlarmTopic": f"arn:aws:sns:{self.region}:{ACCOUNT}:{p}-pipeline-alarms",
            f"{p}-RepositoryArn": f"arn:aws:codecommit:{self.region}:{ACCOUNT}:{p}",
            f"{p}-RepositoryName": p,
            f"{p}-QatImagePipeline": f"arn:aws:imagebuilder:{self.region}:{ACCOUNT}:image-pipeline/{p}-qat",
            f"{p}-ProdImagePipeline": f"arn:aws:imagebuilder:{self.region}:{ACCOUNT}:image-pipeline/{p}-prod",
            f"{p}-QatImageReadyTopic": f"arn:aws:sns:{self.region}:{ACCOUNT}:{p}-qat-image-ready",
            f"{p}-ProdImageReadyTopic": f"arn:aws:sns:{self.region}:{ACCOUNT}:{p}-prod-image-ready",
        }
        return table.get(name, f"<import {name}>")

    def ref(self, name):
        builtin = {"AWS::Region": self.region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
        if name in builtin:
            return builtin[name]
        if name in self.params:
            return self.params[name]
        res = self.doc.get("Resources", {}).get(name)
        if res and res["Type"] == "AWS::S3::Bucket":
            return BUCKET if name == "ArtifactBucket" else name.lower()
        if res and "Name" in res.get("Properties", {}):
            return self.resolve(res["Properties"]["Name"])
        if res and res["Type"] == "AWS::EC2::LaunchTemplate":
            return "lt-0123456789abcdef0"
        if res and res["Type"] == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{ACCOUNT}:{self.resolve(res['Properties'].get('TopicName', name))}"
        return name

    def getatt(self, target):
        name, attr = target.split(".", 1)
        res = self.doc["Resources"].get(name, {})
        kind, r, a = res.get("Type", ""), self.region, ACCOUNT
        if attr == "Arn":
            props = res.get("Properties", {})
            named = lambda key: self.resolve(props.get(key, name))  # noqa: E731
            return {
                "AWS::S3::Bucket": lambda: f"arn:aws:s3:::{self.ref(name)}",
                "AWS::Logs::LogGroup": lambda: f"arn:aws:logs:{r}:{a}:log-group:{named('LogGroupName')}",
                "AWS::SQS::Queue": lambda: f"arn:aws:sqs:{r}:{a}:{named('QueueName')}",
                "AWS::IAM::Role": lambda: f"arn:aws:iam::{a}:role/{name}",
                "AWS::CodeBuild::Project": lambda: f"arn:aws:codebuild:{r}:{a}:project/{named('Name')}",
                "AWS::CodeCommit::Repository": lambda: f"arn:aws:codecommit:{r}:{a}:{named('RepositoryName')}",
                "AWS::Lambda::Function": lambda: f"arn:aws:lambda:{r}:{a}:function:{named('FunctionName')}",
                "AWS::KMS::Key": lambda: f"arn:aws:kms:{r}:{a}:key/k",
                "AWS::Events::Rule": lambda: f"arn:aws:events:{r}:{a}:rule/{name}",
            }.get(kind, lambda: f"arn:aws:cloudformation:{r}:{a}:{name}")()
        return f"{name}-{attr}"

    def condition(self, value):
        if isinstance(value, str):
            return self.condition(self.doc["Conditions"][value])
        if isinstance(value, _Tag):
            if value.tag == "!Or":
                return any(self.condition(v) for v in value.value)
            if value.tag == "!And":
                return all(self.condition(v) for v in value.value)
            if value.tag == "!Not":
                return not self.condition(value.value[0])
            if value.tag == "!Equals":
                a, b = (self.resolve(v) for v in value.value)
                return a == b
            if value.tag == "!Condition":
                return self.condition(value.value)
        raise ValueError(f"condition {value!r}")

    def resolve(self, value):
        if isinstance(value, _Tag):
            v = value.value
            if value.tag == "!Sub":
                template, extra = (v, {}) if isinstance(v, str) else (v[0], {k: self.resolve(x) for k, x in v[1].items()})

                def sub(m):
                    key = m.group(1)
                    if key in extra:
                        return extra[key]
                    if "." in key:
                        return self.getatt(key)
                    return self.ref(key)

                return re.sub(r"\$\{([^}!]+)\}", sub, template)
            if value.tag == "!Ref":
                return self.ref(v)
            if value.tag == "!GetAtt":
                return self.getatt(v if isinstance(v, str) else ".".join(v))
            if value.tag == "!If":
                return self.resolve(v[1] if self.condition(v[0]) else v[2])
            if value.tag == "!FindInMap":
                m, k1, k2 = (self.resolve(x) for x in v)
                return self.doc["Mappings"][m][k1][k2]
            if value.tag == "!Join":
                return v[0].join(self.resolve(x) for x in self.resolve(v[1]))
            raise ValueError(f"unhandled {value.tag}")
        if isinstance(value, dict):
            if set(value) == {"Fn::ImportValue"}:
                return self.imports(self.resolve(value["Fn::ImportValue"]))
            return {k: self.resolve(x) for k, x in value.items()}
        if isinstance(value, list):
            return [self.resolve(x) for x in value]
        return value


def allowed_project_names(doc):
    """The shortest and the longest ProjectName the template's AllowedPattern accepts."""
    pattern = re.compile(doc["Parameters"]["ProjectName"]["AllowedPattern"])
    lengths = [n for n in range(1, 64) if pattern.fullmatch("a" * n)]
    return ["codedeploy-agent", "a" * min(lengths), "a" * max(lengths)]


def role_s3_resources(ctx, role, action):
    out = []
    for policy in role["Properties"].get("Policies", []):
        for st in statements(policy["PolicyDocument"]):
            if st["Effect"] == "Allow" and action in as_list(st["Action"]):
                out += as_list(ctx.resolve(st["Resource"]))
    return out


class ArtifactKeyLayout(unittest.TestCase):
    """CodePipeline stores each pipeline's artifacts under the pipeline name cut to 20
    characters (https://docs.aws.amazon.com/codepipeline/latest/userguide/troubleshooting.html#troubleshooting-truncated-artifacts;
    the artifact store names a bucket only: https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ArtifactStore.html).
    Every role that reads or writes pipeline artifacts must be allowed that key."""

    def test_pipeline_roles_may_write_where_codepipeline_writes(self):
        doc = load("pipelines.yml")
        for project in allowed_project_names(doc):
            ctx = Ctx(doc, project)
            pipelines = {k: r for k, r in doc["Resources"].items() if r["Type"] == "AWS::CodePipeline::Pipeline"}
            self.assertEqual(len(pipelines), 2)
            for logical, pipeline in pipelines.items():
                name = ctx.resolve(pipeline["Properties"]["Name"])
                key = f"arn:aws:s3:::{BUCKET}/{name[:20]}/SourceOutp/Ab12Cd3"
                # The pipeline's own role (Source writes, Deploy reads) and the Package project's role.
                for role_name in ("PipelineRole", "PackageRole"):
                    role = doc["Resources"][role_name]
                    for action in ("s3:PutObject", "s3:GetObject"):
                        resources = role_s3_resources(ctx, role, action)
                        self.assertTrue(
                            any(fnmatch.fnmatchcase(key, r) for r in resources),
                            f"{role_name} may not {action} {key} ({logical} of ProjectName {project!r}); it allows {resources}",
                        )

    def test_the_component_may_read_what_the_buildspec_publishes(self):
        # The buildspec publishes agent/<commit>/<tarball>; the build role may put it, the Image
        # Builder instance role may get the key the component's S3Download substitutes.
        commit = "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6"
        buildspec = (REPO / "pipeline/buildspec.yml").read_text()
        self.assertIn('prefix="$ARTIFACT_PREFIX/agent/$commit"', buildspec)
        component = yaml.safe_load((REPO / "image-builder-components/codedeploy-agent.yml").read_text())
        (download,) = [s for p in component["phases"] if p["name"] == "build" for s in p["steps"] if s["action"] == "S3Download"]
        params = {"ArtifactBucket": BUCKET, "ArtifactPrefix": "codedeploy-agent", "Commit": commit, "Version": "0.1.0", "Arch": "x86_64"}
        source = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: params[m.group(1)], download["inputs"][0]["source"])
        self.assertEqual(source, f"s3://{BUCKET}/codedeploy-agent/agent/{commit}/codedeploy-agent-0.1.0-x86_64.tar.gz")
        key = "arn:aws:s3:::" + source[len("s3://"):]
        artifacts = load("artifacts.yml")
        puts = role_s3_resources(Ctx(artifacts), artifacts["Resources"]["BuildRole"], "s3:PutObject")
        self.assertTrue(any(fnmatch.fnmatchcase(key, r) for r in puts), puts)
        ib = load("image-builder.yml")
        gets = role_s3_resources(Ctx(ib), ib["Resources"]["BuilderRole"], "s3:GetObject")
        self.assertTrue(any(fnmatch.fnmatchcase(key, r) for r in gets), gets)


class KeyPolicyPrincipals(unittest.TestCase):
    def setUp(self):
        self.doc = load("artifacts.yml")
        self.ctx = Ctx(self.doc)
        self.policy = self.ctx.resolve(self.doc["Resources"]["Key"]["Properties"]["KeyPolicy"])

    def grants(self, principal_kind, principal):
        out = []
        for st in statements(self.policy):
            names = as_list(st.get("Principal", {}).get(principal_kind, []))
            if st["Effect"] == "Allow" and principal in names:
                out.append(st)
        return out

    def test_image_builder_service_linked_role_is_named(self):
        # "If your SNS topic is encrypted, you must grant permission in the AWS KMS key policy
        # for the Image Builder service role": the role itself is the principal, not the account
        # root with a condition (https://docs.aws.amazon.com/imagebuilder/latest/userguide/integ-sns.html#integ-sns-encrypted).
        slr = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/imagebuilder.amazonaws.com/AWSServiceRoleForImageBuilder"
        grants = self.grants("AWS", slr)
        self.assertTrue(grants, "the key policy does not name AWSServiceRoleForImageBuilder as a principal")
        actions = {a for st in grants for a in as_list(st["Action"])}
        self.assertLessEqual({"kms:Decrypt", "kms:GenerateDataKey"}, actions)

    def test_services_publishing_to_encrypted_topics(self):
        # EventBridge rules and CloudWatch alarms publish to KMS-encrypted SNS topics only if the
        # key policy lets their service principal decrypt and generate data keys
        # (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
        for service in ("events.amazonaws.com", "cloudwatch.amazonaws.com"):
            actions = {a for st in self.grants("Service", service) for a in as_list(st["Action"])}
            self.assertIn("kms:Decrypt", actions, service)
            self.assertTrue({"kms:GenerateDataKey", "kms:GenerateDataKey*"} & actions, service)

    def test_cloudwatch_logs_regional_principal(self):
        # Log groups encrypted with a CMK: logs.<region>.amazonaws.com, scoped by encryption
        # context (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html).
        (st,) = self.grants("Service", "logs.us-east-1.amazonaws.com")
        self.assertIn("kms:EncryptionContext:aws:logs:arn", json.dumps(st["Condition"]))

    def test_codepipeline_publishes_approvals_with_its_role(self):
        # CodePipeline publishes approval notifications as its service role, which needs the key.
        doc = load("pipelines.yml")
        ctx = Ctx(doc)
        role = ctx.resolve(doc["Resources"]["PipelineRole"]["Properties"]["Policies"][0]["PolicyDocument"])
        actions = {a for st in statements(role) for a in as_list(st["Action"])}
        self.assertLessEqual({"sns:Publish", "kms:GenerateDataKey"}, actions)

    def test_alb_log_delivery_principal_per_region(self):
        # Regions available before August 2022 accept only their Elastic Load Balancing account
        # (us-east-1: 127311923021), later ones the log-delivery service principal; the bucket
        # must use SSE-S3 (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/enable-access-logging.html).
        env = load("environments.yml")
        for region, expected in (
            ("us-east-1", {"AWS": "arn:aws:iam::127311923021:root"}),
            ("eu-west-1", {"AWS": "arn:aws:iam::156460612806:root"}),
            ("sa-east-1", {"AWS": "arn:aws:iam::507241528517:root"}),
            ("ca-west-1", {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}),
        ):
            ctx = Ctx(env, region=region)
            policy = ctx.resolve(env["Resources"]["AlbLogBucketPolicy"]["Properties"]["PolicyDocument"])
            (st,) = [s for s in statements(policy) if s.get("Sid") == "ElbLogDelivery"]
            self.assertEqual(st["Principal"], expected, region)
        (rule,) = env["Resources"]["AlbLogBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        self.assertEqual(rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")


class RefusedDeploymentGroupShapes(unittest.TestCase):
    """CloudFormation refuses AWS::CodeDeploy::DeploymentGroup with COPY_AUTO_SCALING_GROUP:
    with AutoScalingGroups "Property AutoScalingGroups cannot be specified", without them
    "Exactly one AutoScaling group must be specified"
    (https://github.com/aws-cloudformation/cloudformation-coverage-roadmap/issues/2071,
    https://github.com/aws/aws-cdk/issues/30555). And CodeDeploy replaces the original group
    with its copy, so no CloudFormation-owned group may be the blue fleet
    (https://docs.aws.amazon.com/codedeploy/latest/userguide/deployment-groups-create-blue-green.html)."""

    def test_no_template_uses_a_refused_shape(self):
        for path in sorted((REPO / "pipeline/templates").glob("*.yml")):
            for logical, res in load(path.name)["Resources"].items():
                if res["Type"] != "AWS::CodeDeploy::DeploymentGroup":
                    continue
                props = res["Properties"]
                action = props.get("BlueGreenDeploymentConfiguration", {}).get("GreenFleetProvisioningOption", {}).get("Action")
                self.assertNotEqual(action, "COPY_AUTO_SCALING_GROUP", f"{path.name}: {logical} is refused by CloudFormation")
                self.assertNotEqual(props.get("DeploymentStyle", {}).get("DeploymentType"), "BLUE_GREEN",
                                    f"{path.name}: {logical}: EC2 blue/green cannot be a CloudFormation deployment group")

    def test_production_blue_green_is_owned_by_the_custom_resource(self):
        env = load("environments.yml")["Resources"]
        group = env["ProdDeploymentGroup"]
        self.assertEqual(group["Type"], "Custom::ProdBlueGreenDeploymentGroup")
        asg_names = {Ctx(load("environments.yml")).resolve(r["Properties"].get("AutoScalingGroupName"))
                     for r in env.values() if r["Type"] == "AWS::AutoScaling::AutoScalingGroup"}
        blue = Ctx(load("environments.yml")).resolve(group["Properties"]["AutoScalingGroupName"])
        self.assertNotIn(blue, asg_names, "the blue group must not be a CloudFormation resource")


def agent_binary():
    for candidate in (os.environ.get("CODEDEPLOY_AGENT_BIN"), REPO / "target/debug/codedeploy-agent",
                      REPO / "target/release/codedeploy-agent", shutil.which("codedeploy-agent")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class DeployedArtifacts(unittest.TestCase):
    """Whatever a pipeline's Deploy action receives must be a CodeDeploy bundle with a valid
    appspec.yml at its root (https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file.html),
    checked with the agent's own `codedeploy-agent validate`."""

    def bundle_dir(self, doc, pipeline, artifact):
        for stage in pipeline["Properties"]["Stages"]:
            for action in stage["Actions"]:
                if any(o["Name"] == artifact for o in action.get("OutputArtifacts", [])):
                    provider = action["ActionTypeId"]["Provider"]
                    if provider == "CodeCommit":
                        return REPO  # the repository root at the commit
                    self.assertEqual(provider, "CodeBuild", action["Name"])
                    project = doc["Resources"][action["Configuration"]["ProjectName"].value]["Properties"]
                    spec = yaml.safe_load((REPO / project["Source"]["BuildSpec"]).read_text())
                    return REPO / spec["artifacts"]["base-directory"]
        self.fail(f"no action produces {artifact}")

    def test_every_pipeline_deploys_a_valid_bundle(self):
        binary = agent_binary()
        need(self, binary, "codedeploy-agent binary (cargo build, or CODEDEPLOY_AGENT_BIN)")
        doc = load("pipelines.yml")
        for logical, pipeline in doc["Resources"].items():
            if pipeline["Type"] != "AWS::CodePipeline::Pipeline":
                continue
            deploys = [a for s in pipeline["Properties"]["Stages"] for a in s["Actions"] if a["ActionTypeId"]["Category"] == "Deploy"]
            self.assertEqual(len(deploys), 1, logical)
            (artifact,) = [i["Name"] for i in deploys[0]["InputArtifacts"]]
            bundle = self.bundle_dir(doc, pipeline, artifact)
            proc = subprocess.run([binary, "validate", str(bundle)], capture_output=True, text=True, timeout=60)
            self.assertEqual(proc.returncode, 0, f"{logical} deploys {bundle}: {proc.stdout}{proc.stderr}")


def parliament_cli():
    venv = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codedeploy-agent-ci/parliament/bin/parliament"
    for candidate in (os.environ.get("PARLIAMENT"), shutil.which("parliament"), venv):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


# Findings accepted, each with its reason. Parliament has no model of conditions that scope
# wildcard resources, so a few documented patterns would otherwise be reported.
ACCEPTED = {
    # ec2:RunInstances/CreateTags on "*" scoped by ec2:LaunchTemplate / ec2:CreateAction.
    ("RESOURCE_STAR", "ec2:RunInstances"), ("RESOURCE_STAR", "ec2:CreateTags"),
    # AWS-owned Image Builder components and images have the account "aws" in their ARN
    # (https://docs.aws.amazon.com/imagebuilder/latest/userguide/manage-components.html).
    ("INVALID_ARN", ":aws:component/"), ("INVALID_ARN", ":aws:image/"),
    # kms:ResourceAliases applies to Decrypt/DescribeKey/GenerateDataKey
    # (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-resource-aliases);
    # parliament's action table predates it.
    ("UNKNOWN_CONDITION_FOR_ACTION", "kms:ResourceAliases"),
}


class IamLinter(unittest.TestCase):
    """parliament (https://github.com/duo-labs/parliament) over every identity policy."""

    def test_every_identity_policy_is_clean(self):
        cli = parliament_cli()
        need(self, cli, "parliament (scripts/test installs it into ~/.cache/codedeploy-agent-ci/parliament)")
        problems = []
        with tempfile.TemporaryDirectory() as tmp:
            for path in sorted((REPO / "pipeline/templates").glob("*.yml")):
                doc = load(path.name)
                # Account-id parameters (infra-pipeline, deployer-role) stand for real accounts.
                accounts = {k: "210987654321" for k in doc.get("Parameters", {}) if k.endswith("AccountId")}
                ctx = Ctx(doc, params=accounts)
                for logical, res in doc["Resources"].items():
                    docs = []
                    if res["Type"] == "AWS::IAM::Role":
                        # A policy may be conditional (`!If [Cond, {...}, !Ref AWS::NoValue]`).
                        policies = [ctx.resolve(p) if isinstance(p, _Tag) else p for p in res["Properties"].get("Policies", [])]
                        docs = [(f"{logical}/{p['PolicyName']}", p["PolicyDocument"]) for p in policies if isinstance(p, dict)]
                    elif res["Type"] == "AWS::IAM::ManagedPolicy":
                        docs = [(logical, res["Properties"]["PolicyDocument"])]
                    for name, policy in docs:
                        file = Path(tmp) / f"{path.stem}__{name.replace('/', '__')}.json"
                        file.write_text(json.dumps(ctx.resolve(policy)))
            proc = subprocess.run([cli, "--directory", tmp, "--json"], capture_output=True, text=True,
                                  timeout=300, stdin=subprocess.DEVNULL)
            if proc.returncode not in (0, 1) or (proc.stderr.strip() and not proc.stdout):
                problems.append(f"parliament failed ({proc.returncode}): {proc.stderr.strip()}")
            for line in proc.stdout.splitlines():
                finding = json.loads(line)
                detail = json.dumps(finding.get("location", {})) + json.dumps(finding.get("detail", ""))
                if any(issue == finding["issue"] and action in detail for issue, action in ACCEPTED):
                    continue
                where = Path(finding.get("location", {}).get("filepath", "?")).stem.replace("__", " ")
                problems.append(f"{where}: {finding['issue']} {finding.get('title', '')} {json.dumps(finding.get('detail', ''))}")
        self.assertEqual(problems, [])


if __name__ == "__main__":
    unittest.main()
