"""The infrastructure pipeline (pipeline/templates/infra-pipeline.yml) and the cross-account
bootstrap (pipeline/templates/deployer-role.yml), rendered for concrete parameters.

`render` resolves the intrinsic functions the two templates use (Ref, Sub, If, Equals,
GetAtt, Join) with a given parameter set, as CloudFormation would, so the tests can read the
pipeline of one account (every environment in the tooling account) and of three accounts, and
check its stages, the roles each action assumes, and who may assume them.
"""

import fnmatch
import json
import re
import unittest
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TOOLING = "111111111111"
DEV, TEST, PROD = "222222222222", "333333333333", "444444444444"
STACKS = ["artifacts", "environments", "image-builder", "lambdas", "pipelines"]


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


def load(name):
    return yaml.load((TEMPLATES / name).read_text(), Loader=_Loader)


class _Conditions(dict):
    """Conditions evaluated when first used (one may refer to another defined after it)."""

    def __init__(self, renderer, exprs):
        super().__init__()
        self.renderer, self.exprs = renderer, exprs

    def __missing__(self, name):
        value = self.renderer.resolve(self.exprs[name])
        self[name] = value
        return value


class Renderer:
    def __init__(self, template, params, account=TOOLING, region="us-east-1"):
        self.t = template
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.params.update(params)
        self.pseudo = {"AWS::AccountId": account, "AWS::Region": region, "AWS::Partition": "aws"}
        self.conditions = _Conditions(self, template.get("Conditions", {}))

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        assert name in self.t["Resources"], f"Ref to unknown {name}"
        return f"<{name}>"

    def sub(self, text, extra):
        def one(m):
            key = m.group(1)
            if key in extra:
                return str(extra[key])
            if "." in key:
                return f"<{key}>"
            return self.ref(key)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, v):
        if isinstance(v, list):
            return [self.resolve(x) for x in v if x != "AWS::NoValue"]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            ((k, a),) = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::Sub":
                if isinstance(a, list):
                    return self.sub(a[0], {n: self.resolve(x) for n, x in a[1].items()})
                return self.sub(a, {})
            if k == "Fn::Equals":
                x, y = self.resolve(a)
                return x == y
            if k == "Fn::Not":
                return not self.resolve(a[0])
            if k == "Fn::Or":
                return any(self.resolve(x) for x in a)
            if k == "Fn::And":
                return all(self.resolve(x) for x in a)
            if k == "Fn::If":
                return self.resolve(a[1] if self.conditions[a[0]] else a[2])
            if k == "Fn::FindInMap":
                m, a1, a2 = (self.resolve(x) for x in a)
                return self.t["Mappings"][m][a1][a2]
            if k == "Fn::GetAtt":
                return f"<{a[0]}.{a[1]}>"
            if k == "Fn::Join":
                return a[0].join(self.resolve(a[1]))
            if k == "Condition":
                return self.conditions[a]
        return {k: self.resolve(x) for k, x in v.items()}

    def resources(self):
        out = {}
        for name, res in self.t["Resources"].items():
            cond = res.get("Condition")
            if cond and not self.conditions[cond]:
                continue
            out[name] = self.resolve(res)
        return out


def render_pipeline(**params):
    base = {"ApprovalEmail": "ops@example.com"}
    base.update(params)
    return Renderer(load("infra-pipeline.yml"), base).resources()


def statements(doc):
    s = doc["Statement"]
    return s if isinstance(s, list) else [s]


def as_list(v):
    return v if isinstance(v, list) else [v]


class Layouts:
    def stages(self, res):
        return res["Pipeline"]["Properties"]["Stages"]

    def deploy_accounts(self, res):
        """{stage name: set of accounts whose deployer role its actions assume}"""
        out = {}
        for stage in self.stages(res):
            if stage["Name"].startswith("Deploy"):
                accounts = set()
                for action in stage["Actions"]:
                    m = re.fullmatch(r"arn:aws:iam::(\d{12}):role/codedeploy-agent-deployer", action["RoleArn"])
                    self.assertTrue(m, action["RoleArn"])
                    accounts.add(m.group(1))
                    if action["Configuration"]["ActionMode"] == "CHANGE_SET_REPLACE":
                        self.assertEqual(
                            action["Configuration"]["RoleArn"],
                            f"arn:aws:iam::{m.group(1)}:role/codedeploy-agent-cfn-exec",
                        )
                out[stage["Name"]] = accounts
        return out


class InfraPipeline(Layouts, unittest.TestCase):
    def test_stage_order_lint_first_approval_before_test_and_prod(self):
        res = render_pipeline()
        names = [s["Name"] for s in self.stages(res)]
        self.assertEqual(names, ["Source", "Lint", "BuildLambdas", "DeployDev", "ApproveTest", "DeployTest", "ApproveProd", "DeployProd"])
        for stage in self.stages(res):
            if stage["Name"].startswith("Approve"):
                (action,) = stage["Actions"]
                self.assertEqual(action["ActionTypeId"]["Provider"], "Manual")
                self.assertEqual(action["Configuration"]["NotificationArn"], "<ApprovalTopic>")

    def test_each_environment_runs_a_change_set_then_executes_it_for_every_stack(self):
        res = render_pipeline()
        for stage in self.stages(res):
            if not stage["Name"].startswith("Deploy"):
                continue
            env = stage["Name"][len("Deploy"):].lower()
            actions = sorted(stage["Actions"], key=lambda a: a["RunOrder"])
            modes = [(a["Configuration"]["StackName"], a["Configuration"]["ActionMode"]) for a in actions]
            want = []
            for s in STACKS:
                want += [(f"codedeploy-agent-{s}", "CHANGE_SET_REPLACE"), (f"codedeploy-agent-{s}", "CHANGE_SET_EXECUTE")]
            self.assertEqual(modes, want, stage["Name"])
            for a in actions:
                if a["Configuration"]["ActionMode"] == "CHANGE_SET_REPLACE":
                    stack = a["Configuration"]["StackName"].removeprefix("codedeploy-agent-")
                    self.assertEqual(a["Configuration"]["TemplatePath"], f"Source::pipeline/templates/{stack}.yml")
                    self.assertEqual(a["Configuration"]["TemplateConfiguration"], f"Source::pipeline/environments/{env}/{stack}.json")
                    self.assertTrue((TEMPLATES / f"{stack}.yml").is_file())
            # The Lambda code key follows the commit, so each commit updates the functions' code;
            # the zips are read from the tooling account's bucket (BuildLambdas published them).
            for name in ("LambdasChangeSet", "EnvironmentsChangeSet"):
                change_set = next(a for a in actions if a["Name"] == name)
                self.assertEqual(
                    json.loads(change_set["Configuration"]["ParameterOverrides"]),
                    {"LambdaCodeVersion": "#{SourceVariables.CommitId}", "LambdaCodeBucket": "<ArtifactBucket>"},
                )

    def test_every_template_configuration_exists_and_sets_the_required_parameters(self):
        res = render_pipeline()
        for stage in self.stages(res):
            for a in stage["Actions"]:
                conf = a.get("Configuration", {})
                if conf.get("ActionMode") != "CHANGE_SET_REPLACE":
                    continue
                path = TEMPLATES.parent.parent / conf["TemplateConfiguration"].removeprefix("Source::")
                self.assertTrue(path.is_file(), path)
                given = set(json.loads(path.read_text())["Parameters"])
                overrides = set(json.loads(conf.get("ParameterOverrides", "{}")))
                template = load(conf["TemplatePath"].removeprefix("Source::pipeline/templates/"))
                declared = template.get("Parameters", {})
                required = {k for k, v in declared.items() if "Default" not in v}
                self.assertLessEqual(required, given | overrides, path)
                self.assertLessEqual(given | overrides, set(declared), f"{path}: parameters the template does not declare")

    def test_lint_stage_runs_the_linters_and_validate(self):
        res = render_pipeline()
        lint = next(s for s in self.stages(res) if s["Name"] == "Lint")
        self.assertEqual(lint["Actions"][0]["Configuration"]["ProjectName"], "<LintProject>")
        spec = yaml.safe_load((TEMPLATES.parent / "buildspec-infra.yml").read_text())
        commands = "\n".join(spec["phases"]["build"]["commands"])
        for tool in ["cfn-lint pipeline/templates", "cfn_nag_scan", "checkov -d pipeline/templates", "pipeline/validate-appspecs"]:
            self.assertIn(tool, commands)
        install = "\n".join(spec["phases"]["install"]["commands"])
        self.assertNotRegex(install, r"curl[^\n|]*\|\s*(ba)?sh")
        self.assertIn("sha256sum -c", install)

    def test_one_account_every_environment_in_the_tooling_account(self):
        res = render_pipeline()
        self.assertEqual(self.deploy_accounts(res), {"DeployDev": {TOOLING}, "DeployTest": {TOOLING}, "DeployProd": {TOOLING}})
        assume = next(s for s in statements(res["PipelineRole"]["Properties"]["Policies"][0]["PolicyDocument"]) if s["Sid"] == "AssumeDeployers")
        self.assertEqual(set(as_list(assume["Resource"])), {f"arn:aws:iam::{TOOLING}:role/codedeploy-agent-deployer"})

    def test_three_accounts_each_environment_in_its_own(self):
        res = render_pipeline(DevAccountId=DEV, TestAccountId=TEST, ProdAccountId=PROD)
        self.assertEqual(self.deploy_accounts(res), {"DeployDev": {DEV}, "DeployTest": {TEST}, "DeployProd": {PROD}})
        policy = res["PipelineRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        assume = next(s for s in statements(policy) if s["Sid"] == "AssumeDeployers")
        self.assertEqual(
            set(as_list(assume["Resource"])),
            {f"arn:aws:iam::{a}:role/codedeploy-agent-deployer" for a in (DEV, TEST, PROD)},
        )
        self.assertEqual(assume["Action"], "sts:AssumeRole")
        # The pipeline role is named, so the deployer roles can trust exactly it.
        self.assertEqual(res["PipelineRole"]["Properties"]["RoleName"], "codedeploy-agent-infra-pipeline")
        # Bucket and key: the environment accounts, and only their deployer / execution roles.
        for doc in (res["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"], res["ArtifactKey"]["Properties"]["KeyPolicy"]):
            cross = [s for s in statements(doc) if s["Effect"] == "Allow" and "AWS" in s.get("Principal", {}) and s["Principal"]["AWS"] != f"arn:aws:iam::{TOOLING}:root"
                     or s.get("Sid", "").startswith("Environment")]
            (stmt,) = cross
            self.assertEqual(set(stmt["Principal"]["AWS"]), {f"arn:aws:iam::{a}:root" for a in (DEV, TEST, PROD)})
            self.assertEqual(
                set(stmt["Condition"]["ArnLike"]["aws:PrincipalArn"]),
                {"arn:aws:iam::*:role/codedeploy-agent-deployer", "arn:aws:iam::*:role/codedeploy-agent-cfn-exec"},
            )
            for action in as_list(stmt["Action"]):
                self.assertRegex(action, r"^(s3:GetObject(Version)?|kms:(Decrypt|DescribeKey))$")

    def test_source_is_codecommit_or_a_github_connection(self):
        cc = render_pipeline()
        (src,) = self.stages(cc)[0]["Actions"]
        self.assertEqual(src["ActionTypeId"]["Provider"], "CodeCommit")
        self.assertIn("StartOnPushRule", cc)
        self.assertIn("DenyPushToReleaseBranchPolicy", cc)
        gh = render_pipeline(SourceProvider="GitHub", ConnectionId="0a1b2c3d-1234-5678-9abc-def012345678", FullRepositoryId="example/codedeploy-agent")
        (src,) = self.stages(gh)[0]["Actions"]
        self.assertEqual(src["ActionTypeId"]["Provider"], "CodeStarSourceConnection")
        self.assertEqual(src["Configuration"]["FullRepositoryId"], "example/codedeploy-agent")
        self.assertNotIn("StartOnPushRule", gh)
        policies = {p["PolicyName"]: p for p in gh["PipelineRole"]["Properties"]["Policies"]}
        (stmt,) = statements(policies["source-github"]["PolicyDocument"])
        self.assertEqual(stmt["Action"], "codestar-connections:UseConnection")
        self.assertEqual(stmt["Resource"], src["Configuration"]["ConnectionArn"])

    def test_failed_stopped_and_cancelled_executions_notify(self):
        res = render_pipeline()
        rule = res["PipelineStateRule"]["Properties"]
        self.assertEqual(set(rule["EventPattern"]["detail"]["state"]), {"FAILED", "STOPPED", "CANCELED"})
        self.assertEqual(rule["EventPattern"]["detail"]["pipeline"], [{"prefix": "codedeploy-agent-"}])

    def test_cloudtrail_is_optional(self):
        self.assertNotIn("Trail", render_pipeline())
        res = render_pipeline(EnableCloudTrail="true")
        trail = res["Trail"]["Properties"]
        self.assertTrue(trail["IsMultiRegionTrail"] and trail["EnableLogFileValidation"])

    def test_deny_push_policy_denies_the_release_branch_only(self):
        res = render_pipeline(BranchName="main")
        (stmt,) = statements(res["DenyPushToReleaseBranchPolicy"]["Properties"]["PolicyDocument"])
        self.assertEqual(stmt["Effect"], "Deny")
        self.assertIn("codecommit:GitPush", stmt["Action"])
        self.assertEqual(stmt["Condition"]["StringEqualsIfExists"]["codecommit:References"], ["refs/heads/main"])


def allows(doc, action, resource, principal=None):
    """Some Allow statement of `doc` matches action, resource (and principal, for resource
    policies): IAM's wildcard matching of Action and Resource, literal principals."""
    for s in statements(doc):
        if s["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in as_list(s["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])):
            continue
        if principal is not None:
            aws = as_list(s.get("Principal", {}).get("AWS", []))
            account = principal.split(":")[4]
            if f"arn:aws:iam::{account}:root" not in aws and principal not in aws:
                continue
            cond = s.get("Condition", {}).get("ArnLike", {}).get("aws:PrincipalArn")
            if cond is not None and not any(fnmatch.fnmatchcase(principal, c) for c in as_list(cond)):
                continue
        return True
    return False


class LambdaCodeAcrossAccounts(Layouts, unittest.TestCase):
    """The step that updates Lambda code CloudFormation cannot see changing works in every
    environment account: BuildLambdas publishes the commit's zips once in the tooling account,
    each environment's change sets point the functions at them, and CloudFormation in that
    account (its cfn-exec role) may read them on both sides of the account boundary."""

    BUCKET = "tooling-artifacts"
    KEY_ARN = f"arn:aws:kms:us-east-1:{TOOLING}:key/k"
    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def zips_the_stacks_read(self, **params):
        keys = {}
        for name in ("lambdas.yml", "environments.yml"):
            res = Renderer(load(name), {"LambdaCodeVersion": self.COMMIT, **params}).resources()
            for logical, r in res.items():
                if r["Type"] == "AWS::Lambda::Function":
                    keys[logical] = (r["Properties"]["Code"]["S3Bucket"], r["Properties"]["Code"]["S3Key"])
        return keys

    def test_the_functions_read_the_given_bucket_or_their_own(self):
        tooling = self.zips_the_stacks_read(LambdaCodeBucket=self.BUCKET)
        self.assertEqual(len(tooling), 7)
        for logical, (bucket, key) in tooling.items():
            self.assertEqual(bucket, self.BUCKET, logical)
            self.assertRegex(key, rf"^codedeploy-agent/lambdas/{self.COMMIT}/[a-z-]+\.zip$")
        own = self.zips_the_stacks_read()
        for logical, (bucket, _) in own.items():
            self.assertEqual(bucket, {"Fn::ImportValue": "codedeploy-agent-ArtifactBucket"}, logical)

    def test_build_lambdas_publishes_every_zip_the_stacks_read_before_any_deployment(self):
        spec_text = (TEMPLATES.parent / "buildspec-lambdas.yml").read_text()
        spec = yaml.safe_load(spec_text)
        build = "\n".join(spec["phases"]["build"]["commands"])
        published = set(re.search(r"for bin in ([a-z -]+); do", build).group(1).split())
        post = "\n".join(spec["phases"]["post_build"]["commands"])
        self.assertIn('key="$PROJECT_NAME/lambdas/$commit/$(basename "$zip")"', post)
        self.assertIn("--if-none-match '*'", post)
        self.assertIn('commit="${COMMIT_ID:?', post)
        read = {key.rsplit("/", 1)[1].removesuffix(".zip") for _, key in self.zips_the_stacks_read(LambdaCodeBucket=self.BUCKET).values()}
        self.assertEqual(read, published)
        for params in ({}, {"DevAccountId": DEV, "TestAccountId": TEST, "ProdAccountId": PROD}):
            res = render_pipeline(**params)
            names = [s["Name"] for s in self.stages(res)]
            self.assertLess(names.index("BuildLambdas"), min(i for i, n in enumerate(names) if n.startswith("Deploy")))
            (action,) = next(s for s in self.stages(res) if s["Name"] == "BuildLambdas")["Actions"]
            self.assertEqual(action["Configuration"]["ProjectName"], "<LambdaBuildProject>")
            env = json.loads(action["Configuration"]["EnvironmentVariables"])
            self.assertEqual(env, [{"name": "COMMIT_ID", "value": "#{SourceVariables.CommitId}", "type": "PLAINTEXT"}])
            project = res["LambdaBuildProject"]["Properties"]
            self.assertEqual(project["Source"]["BuildSpec"], "pipeline/buildspec-lambdas.yml")
            variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
            self.assertEqual(variables, {"ARTIFACT_BUCKET": "<ArtifactBucket>", "PROJECT_NAME": "codedeploy-agent"})
            # The build may write only the Lambda prefix.
            (policy,) = res["LambdaBuildRole"]["Properties"]["Policies"]
            writes = [s for s in statements(policy["PolicyDocument"]) if "s3:PutObject" in as_list(s["Action"])]
            self.assertEqual([s["Resource"] for s in writes], ["<ArtifactBucket.Arn>/codedeploy-agent/lambdas/*"])
            start = next(s for s in statements(res["PipelineRole"]["Properties"]["Policies"][0]["PolicyDocument"]) if s["Sid"] == "Lint")
            self.assertIn("<LambdaBuildProject.Arn>", as_list(start["Resource"]))

    def check_layout(self, accounts, **params):
        res = render_pipeline(**params)
        key = f"codedeploy-agent/lambdas/{self.COMMIT}/start-prod-image.zip"
        bucket_policy = json.loads(json.dumps(res["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]).replace("<ArtifactBucket.Arn>", f"arn:aws:s3:::{self.BUCKET}"))
        key_policy = res["ArtifactKey"]["Properties"]["KeyPolicy"]
        for stage, account in accounts.items():
            deploy = next(s for s in self.stages(res) if s["Name"] == stage)
            for name in ("LambdasChangeSet", "EnvironmentsChangeSet"):
                action = next(a for a in deploy["Actions"] if a["Name"] == name)
                # The update step runs as that account's deployer, CloudFormation as its cfn-exec.
                self.assertEqual(action["RoleArn"], f"arn:aws:iam::{account}:role/codedeploy-agent-deployer")
                self.assertEqual(action["Configuration"]["RoleArn"], f"arn:aws:iam::{account}:role/codedeploy-agent-cfn-exec")
            cfn_exec = f"arn:aws:iam::{account}:role/codedeploy-agent-cfn-exec"
            # Resource side (tooling account): bucket and key policies.
            self.assertTrue(allows(bucket_policy, "s3:GetObject", f"arn:aws:s3:::{self.BUCKET}/{key}", cfn_exec), stage)
            self.assertTrue(allows(key_policy, "kms:Decrypt", "*", cfn_exec), stage)
            self.assertFalse(allows(bucket_policy, "s3:PutObject", f"arn:aws:s3:::{self.BUCKET}/{key}", cfn_exec), stage)
            self.assertFalse(allows(bucket_policy, "s3:GetObject", f"arn:aws:s3:::{self.BUCKET}/{key}", f"arn:aws:iam::{account}:role/someone-else"), stage)
            # Identity side (environment account): cfn-exec may read objects of the tooling account.
            deployer = Renderer(load("deployer-role.yml"), {"ToolingAccountId": TOOLING}, account=account).resources()
            (policy,) = deployer["ExecutionRole"]["Properties"]["Policies"]
            read = next(s for s in statements(policy["PolicyDocument"]) if s["Sid"] == "ReadToolingArtifacts")
            self.assertTrue(allows({"Statement": [read]}, "s3:GetObject", f"arn:aws:s3:::{self.BUCKET}/{key}"))
            self.assertEqual(read["Condition"], {"StringEquals": {"s3:ResourceAccount": TOOLING}})
            self.assertTrue(allows(policy["PolicyDocument"], "kms:Decrypt", self.KEY_ARN))

    def test_one_account(self):
        self.check_layout({"DeployDev": TOOLING, "DeployTest": TOOLING, "DeployProd": TOOLING})

    def test_three_accounts(self):
        self.check_layout({"DeployDev": DEV, "DeployTest": TEST, "DeployProd": PROD}, DevAccountId=DEV, TestAccountId=TEST, ProdAccountId=PROD)


class DeployerRole(unittest.TestCase):
    def render(self, account):
        return Renderer(load("deployer-role.yml"), {"ToolingAccountId": TOOLING}, account=account).resources()

    def test_trusts_only_the_tooling_pipeline_role(self):
        for account in (TOOLING, DEV):
            res = self.render(account)
            role = res["DeployerRole"]["Properties"]
            self.assertEqual(role["RoleName"], "codedeploy-agent-deployer")
            (trust,) = statements(role["AssumeRolePolicyDocument"])
            self.assertEqual(trust["Principal"], {"AWS": f"arn:aws:iam::{TOOLING}:root"})
            self.assertEqual(trust["Action"], "sts:AssumeRole")
            self.assertEqual(
                trust["Condition"], {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{TOOLING}:role/codedeploy-agent-infra-pipeline"}}
            )

    def test_deployer_is_least_privilege(self):
        res = self.render(DEV)
        (policy,) = res["DeployerRole"]["Properties"]["Policies"]
        stmts = {s["Sid"]: s for s in statements(policy["PolicyDocument"])}
        for s in stmts.values():
            for action in as_list(s["Action"]):
                self.assertNotIn("*", action, s["Sid"])
        self.assertEqual(stmts["ChangeSetsOnTheProjectStacks"]["Resource"], f"arn:aws:cloudformation:us-east-1:{DEV}:stack/codedeploy-agent-*/*")
        self.assertEqual(stmts["PassOnlyTheExecutionRole"]["Resource"], "<ExecutionRole.Arn>")
        self.assertEqual(stmts["PassOnlyTheExecutionRole"]["Condition"], {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}})
        self.assertEqual(stmts["ReadAndWritePipelineArtifacts"]["Condition"], {"StringEquals": {"s3:ResourceAccount": TOOLING}})

    def test_execution_role_is_for_cloudformation_here_and_iam_is_scoped(self):
        res = self.render(DEV)
        role = res["ExecutionRole"]["Properties"]
        self.assertEqual(role["RoleName"], "codedeploy-agent-cfn-exec")
        (trust,) = statements(role["AssumeRolePolicyDocument"])
        self.assertEqual(trust["Principal"], {"Service": "cloudformation.amazonaws.com"})
        (policy,) = role["Policies"]
        iam = next(s for s in statements(policy["PolicyDocument"]) if s["Sid"] == "ProjectIamOnly")
        for arn in iam["Resource"]:
            self.assertRegex(arn, rf"^arn:aws:iam::{DEV}:(role|instance-profile|group|policy)/codedeploy-agent-\*$")

    def test_names_match_what_the_pipeline_assumes(self):
        pipeline = render_pipeline(DevAccountId=DEV)
        dev = next(s for s in pipeline["Pipeline"]["Properties"]["Stages"] if s["Name"] == "DeployDev")
        res = self.render(DEV)
        self.assertEqual({a["RoleArn"] for a in dev["Actions"]}, {f"arn:aws:iam::{DEV}:role/{res['DeployerRole']['Properties']['RoleName']}"})


class ImageRecipes(unittest.TestCase):
    """image-builder.yml for each supported OS and architecture."""

    CASES = [
        ("al2023", "x86_64", "/dev/xvda", "amazon-linux-2023-x86/x.x.x"),
        ("al2023", "aarch64", "/dev/xvda", "amazon-linux-2023-arm64/x.x.x"),
        ("ubuntu2204", "x86_64", "/dev/sda1", "ubuntu-server-22-lts-x86/x.x.x"),
        ("ubuntu2204", "aarch64", "/dev/sda1", "ubuntu-server-22-lts-arm64/x.x.x"),
        ("ubuntu2404", "x86_64", "/dev/sda1", "ubuntu-server-24-lts-x86/x.x.x"),
        ("ubuntu2404", "aarch64", "/dev/sda1", "ubuntu-server-24-lts-arm64/x.x.x"),
    ]

    def test_root_device_parent_image_and_artifact_architecture_follow_the_parameters(self):
        for os_name, arch, device, parent in self.CASES:
            with self.subTest(os=os_name, arch=arch):
                res = Renderer(
                    load("image-builder.yml"),
                    {"OperatingSystem": os_name, "Architecture": arch},
                ).resources()
                for recipe in ("QatRecipe", "ProdRecipe"):
                    props = res[recipe]["Properties"]
                    self.assertEqual(props["ParentImage"], f"arn:aws:imagebuilder:us-east-1:aws:image/{parent}")
                    (mapping,) = props["BlockDeviceMappings"]
                    self.assertEqual(mapping["DeviceName"], device)
                    agent = next(c for c in props["Components"] if c["ComponentArn"] == "<AgentComponent>")
                    params = {p["Name"]: p["Value"] for p in agent["Parameters"]}
                    self.assertEqual(params["Arch"], [arch])
                self.assertEqual(set(res["AgentComponent"]["Properties"]["SupportedOsVersions"]), {"Amazon Linux 2023", "Ubuntu"})

    def test_an_explicit_parent_image_wins(self):
        res = Renderer(
            load("image-builder.yml"),
            {"ParentImage": "my-image/1.0.0"},
        ).resources()
        self.assertEqual(res["QatRecipe"]["Properties"]["ParentImage"], "arn:aws:imagebuilder:us-east-1:aws:image/my-image/1.0.0")


if __name__ == "__main__":
    unittest.main()
