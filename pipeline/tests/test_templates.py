"""The CloudFormation templates in pipeline/templates/.

Checks what cfn-lint cannot: that every resource the architecture names is there, the stage and
action structure of both pipelines, the deployment styles, least-privilege approver policies
scoped to their own approval action, the artifact bucket's encryption/versioning/TLS-only
policy, encrypted SNS topics, and one role per Lambda function with no wildcard actions.
(cfn-lint itself runs from scripts/test.)
"""

import unittest
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class _Tag:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"{self.tag} {self.value!r}"

    def __eq__(self, other):
        return isinstance(other, _Tag) and (self.tag, self.value) == (other.tag, other.value)


class _Loader(yaml.SafeLoader):
    pass


def _construct(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return _Tag("!" + suffix, value)


_Loader.add_multi_constructor("!", _construct)


def load(name):
    return yaml.load((TEMPLATES / name).read_text(), Loader=_Loader)


def all_resources():
    out = {}
    for path in sorted(TEMPLATES.glob("*.yml")):
        for logical, res in load(path.name)["Resources"].items():
            out[f"{path.stem}.{logical}"] = res
    return out


def of_type(kind):
    return {k: r for k, r in all_resources().items() if r["Type"] == kind}


def text(value):
    """A readable flattening of a value with intrinsic functions, for substring checks."""
    if isinstance(value, _Tag):
        return f"{value.tag}({text(value.value)})"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(text(v) for v in value) + "]"
    return str(value)


def statements(policy_document):
    stmts = policy_document["Statement"]
    return stmts if isinstance(stmts, list) else [stmts]


def as_list(value):
    return value if isinstance(value, list) else [value]


def stage_outline(pipeline):
    return [
        (stage["Name"], [(a["Name"], a["ActionTypeId"]["Category"], a["ActionTypeId"]["Provider"]) for a in stage["Actions"]])
        for stage in pipeline["Properties"]["Stages"]
    ]


class ResourcesPresent(unittest.TestCase):
    REQUIRED = {
        "AWS::KMS::Key": 1,
        "AWS::S3::Bucket": 1,
        "AWS::S3::BucketPolicy": 1,
        "AWS::CodeCommit::Repository": 1,
        "AWS::CodeBuild::Project": 1,
        "AWS::ImageBuilder::Component": 1,
        "AWS::ImageBuilder::ImageRecipe": 2,
        "AWS::ImageBuilder::InfrastructureConfiguration": 2,
        "AWS::ImageBuilder::DistributionConfiguration": 2,
        "AWS::ImageBuilder::ImagePipeline": 2,
        "AWS::SNS::Topic": 4,
        "AWS::SNS::Subscription": 2,
        "AWS::Events::Rule": 3,
        "AWS::Lambda::Function": 5,
        "AWS::Lambda::Permission": 2,
        "AWS::CodeDeploy::Application": 2,
        "AWS::CodeDeploy::DeploymentGroup": 1,
        "AWS::AutoScaling::AutoScalingGroup": 1,
        "AWS::EC2::LaunchTemplate": 2,
        "AWS::ElasticLoadBalancingV2::LoadBalancer": 1,
        "AWS::ElasticLoadBalancingV2::TargetGroup": 1,
        "AWS::ElasticLoadBalancingV2::Listener": 1,
        "AWS::EC2::SecurityGroup": 2,
        "AWS::CodePipeline::Pipeline": 2,
        "AWS::IAM::Group": 2,
        "AWS::IAM::ManagedPolicy": 2,
        "AWS::CloudWatch::Alarm": 1,
    }

    def test_every_named_resource_type_is_present(self):
        counts = {}
        for res in all_resources().values():
            counts[res["Type"]] = counts.get(res["Type"], 0) + 1
        for kind, minimum in self.REQUIRED.items():
            self.assertGreaterEqual(counts.get(kind, 0), minimum, kind)

    def test_every_template_has_parameters_and_outputs(self):
        for path in TEMPLATES.glob("*.yml"):
            doc = load(path.name)
            self.assertIn("ProjectName", doc["Parameters"], path.name)
            self.assertTrue(doc.get("Outputs"), path.name)


class Pipelines(unittest.TestCase):
    def setUp(self):
        self.doc = load("pipelines.yml")
        self.res = self.doc["Resources"]

    def test_qat_stages(self):
        self.assertEqual(
            stage_outline(self.res["QatPipeline"]),
            [
                ("Source", [("Source", "Source", "CodeCommit")]),
                ("Package", [("PackageApp", "Build", "CodeBuild")]),
                ("RefreshQAT", [("RefreshInstances", "Invoke", "Lambda")]),
                ("DeployQAT", [("DeployInPlace", "Deploy", "CodeDeploy")]),
                ("QCApproval", [("QCApproval", "Approval", "Manual")]),
                ("PMOApproval", [("PMOApproval", "Approval", "Manual")]),
                ("VerifyApprovers", [("DistinctApprovers", "Invoke", "Lambda")]),
                ("StartProdImage", [("StartProdImage", "Invoke", "Lambda")]),
            ],
        )
        stages = {s["Name"]: s["Actions"][0] for s in self.res["QatPipeline"]["Properties"]["Stages"]}
        self.assertIn("check-distinct-approvers", text(stages["VerifyApprovers"]["Configuration"]["FunctionName"]))
        self.assertIn('"approvals":["QCApproval","PMOApproval"]', stages["VerifyApprovers"]["Configuration"]["UserParameters"])
        self.assertIn("start-prod-image", text(stages["StartProdImage"]["Configuration"]["FunctionName"]))
        self.assertIn("QatDeploymentGroup", text(stages["DeployQAT"]["Configuration"]))
        self.assertEqual(stages["QCApproval"]["Configuration"]["NotificationArn"], _Tag("!Ref", "QcApprovalTopic"))
        self.assertEqual(stages["PMOApproval"]["Configuration"]["NotificationArn"], _Tag("!Ref", "PmoApprovalTopic"))
        # Started by the image-ready Lambda, not by the push.
        self.assertIs(stages["Source"]["Configuration"]["PollForSourceChanges"], False)

    def test_prod_stages(self):
        self.assertEqual(
            stage_outline(self.res["ProdPipeline"]),
            [
                ("Source", [("Source", "Source", "CodeCommit")]),
                ("Package", [("PackageApp", "Build", "CodeBuild")]),
                ("DeployProd", [("DeployBlueGreen", "Deploy", "CodeDeploy")]),
            ],
        )
        deploy = self.res["ProdPipeline"]["Properties"]["Stages"][2]["Actions"][0]
        self.assertIn("ProdDeploymentGroup", text(deploy["Configuration"]))

    def test_artifact_stores_are_kms_encrypted(self):
        for name in ("QatPipeline", "ProdPipeline"):
            self.assertEqual(self.res[name]["Properties"]["ArtifactStore"]["EncryptionKey"]["Type"], "KMS")

    def test_approver_policies_are_scoped_to_their_own_action(self):
        qat = self.res["QatPipeline"]["Properties"]
        actions = {(s["Name"], a["Name"]) for s in qat["Stages"] for a in s["Actions"] if a["ActionTypeId"]["Category"] == "Approval"}
        for policy, group, own in (("QcApproverPolicy", "QcApprovers", "QCApproval"), ("PmoApproverPolicy", "PmoApprovers", "PMOApproval")):
            props = self.res[policy]["Properties"]
            self.assertEqual(props["Groups"], [_Tag("!Ref", group)])
            granted = {}
            for st in statements(props["PolicyDocument"]):
                self.assertEqual(st["Effect"], "Allow")
                for action in as_list(st["Action"]):
                    self.assertNotIn("*", action, f"{policy}: wildcard action")
                    granted.setdefault(action, []).extend(as_list(st["Resource"]))
            self.assertEqual(granted["codepipeline:ListPipelines"], ["*"])
            for action, resources in granted.items():
                if action != "codepipeline:ListPipelines":
                    self.assertNotIn("*", resources, f"{policy}: {action} on *")
            self.assertTrue(
                {"codepipeline:GetPipeline", "codepipeline:GetPipelineState", "codepipeline:PutApprovalResult"} <= set(granted)
            )
            (approve,) = granted["codepipeline:PutApprovalResult"]
            arn = approve.value
            self.assertTrue(arn.endswith(f"${{QatPipeline}}/{own}/{own}"), arn)
            self.assertIn((own, own), actions)
            for read in ("codepipeline:GetPipeline", "codepipeline:GetPipelineState"):
                self.assertTrue(all(r.value.endswith(":${QatPipeline}") for r in granted[read]), read)

    def test_failed_executions_alarm(self):
        rule = self.res["PipelineFailedRule"]["Properties"]["EventPattern"]
        self.assertEqual(rule["detail"]["state"], ["FAILED"])
        self.assertEqual(set(map(text, rule["detail"]["pipeline"])), {"!Ref(QatPipeline)", "!Ref(ProdPipeline)"})
        # One notification per failure: the rule publishes to the operators' topic, no alarm
        # on the same rule notifies a second time.
        (target,) = self.res["PipelineFailedRule"]["Properties"]["Targets"]
        self.assertIn("AlarmTopic", text(target["Arn"]))
        self.assertFalse(of_type("AWS::CloudWatch::Alarm").get("pipelines.PipelineFailedAlarm"))


class Deployments(unittest.TestCase):
    def setUp(self):
        self.res = load("environments.yml")["Resources"]

    def test_qat_in_place(self):
        props = self.res["QatDeploymentGroup"]["Properties"]
        self.assertEqual(props["DeploymentStyle"]["DeploymentType"], "IN_PLACE")
        self.assertEqual(props["AutoScalingGroups"], [_Tag("!Ref", "QatAutoScalingGroup")])

    def test_prod_blue_green_is_the_custom_resource(self):
        props = self.res["ProdDeploymentGroup"]
        self.assertEqual(props["Type"], "Custom::ProdBlueGreenDeploymentGroup")
        props = props["Properties"]
        self.assertEqual(props["ServiceToken"], _Tag("!GetAtt", "ProdDeploymentGroupFunction.Arn"))
        self.assertIn("ProdTargetGroup", text(props["TargetGroupName"]))
        self.assertIn("ProdUnhealthyHostsAlarm", text(props["AlarmNames"]))
        # The first production group is the custom resource's, never CloudFormation's.
        self.assertFalse(any(r["Type"] == "AWS::AutoScaling::AutoScalingGroup" and "prod" in text(r["Properties"].get("AutoScalingGroupName", "")) for r in self.res.values()))

    def test_image_builder_writes_the_ami_parameter_the_launch_templates_resolve(self):
        ib = load("image-builder.yml")["Resources"]
        for env in ("Qat", "Prod"):
            (dist,) = ib[f"{env}Distribution"]["Properties"]["Distributions"]
            self.assertNotIn("LaunchTemplateConfigurations", dist, "no $Default drift")
            (ssm,) = dist["SsmParameterConfigurations"]
            lt = self.res[f"{env}LaunchTemplate"]["Properties"]["LaunchTemplateData"]
            self.assertEqual(text(lt["ImageId"]), "!Sub(resolve:ssm:" + text(ssm["ParameterName"])[5:-1] + ")")
            self.assertEqual(ib[f"{env}Infrastructure"]["Properties"]["SnsTopicArn"], _Tag("!Ref", f"{env}ImageReadyTopic"))
            recipe = ib[f"{env}Recipe"]["Properties"]["Components"]
            names = text(recipe)
            self.assertIn("update-linux", names)
            self.assertIn("!Ref(AgentComponent)", names)
            params = {p["Name"] for c in recipe for p in c.get("Parameters", [])}
            self.assertEqual(params, {"Commit", "Version", "Arch", "ArtifactBucket", "ArtifactPrefix", "Sha256"})
        qat_asg = self.res["QatAutoScalingGroup"]["Properties"]["LaunchTemplate"]
        self.assertEqual(qat_asg["Version"], _Tag("!GetAtt", "QatLaunchTemplate.LatestVersionNumber"))


class Security(unittest.TestCase):
    def test_artifact_bucket_encrypted_versioned_tls_only_private(self):
        res = load("artifacts.yml")["Resources"]
        bucket = res["ArtifactBucket"]["Properties"]
        (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        self.assertEqual(rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "aws:kms")
        self.assertEqual(bucket["VersioningConfiguration"]["Status"], "Enabled")
        self.assertTrue(all(bucket["PublicAccessBlockConfiguration"].values()))
        policy = res["ArtifactBucketPolicy"]["Properties"]
        self.assertEqual(policy["Bucket"], _Tag("!Ref", "ArtifactBucket"))
        deny_tls = [
            s for s in statements(policy["PolicyDocument"])
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        self.assertEqual(len(deny_tls), 1)
        self.assertEqual(deny_tls[0]["Action"], "s3:*")
        self.assertEqual(deny_tls[0]["Principal"], "*")

    def test_every_bucket_is_encrypted_and_private(self):
        for name, res in of_type("AWS::S3::Bucket").items():
            props = res["Properties"]
            self.assertIn("BucketEncryption", props, name)
            self.assertTrue(all(props["PublicAccessBlockConfiguration"].values()), name)

    def test_every_topic_and_queue_is_encrypted(self):
        for name, res in {**of_type("AWS::SNS::Topic"), **of_type("AWS::SQS::Queue")}.items():
            self.assertIn("KmsMasterKeyId", res["Properties"], name)

    def test_each_lambda_has_its_own_role_without_wildcard_actions(self):
        res = load("lambdas.yml")["Resources"]
        functions = {k: r for k, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
        self.assertEqual(len(functions), 6)
        roles = [f["Properties"]["Role"] for f in functions.values()]
        self.assertEqual(len({text(r) for r in roles}), 6, "functions share a role")
        for name, fn in functions.items():
            self.assertEqual(fn["Properties"]["Runtime"], "provided.al2023", name)
            role = res[fn["Properties"]["Role"].value.split(".")[0]]["Properties"]
            self.assertNotIn("ManagedPolicyArns", role, name)
            for policy in role["Policies"]:
                for st in statements(policy["PolicyDocument"]):
                    for action in as_list(st["Action"]):
                        self.assertNotIn("*", action, f"{name}: {action}")
                    if st["Resource"] == "*":
                        # Only calls without resource-level permissions.
                        self.assertLessEqual(
                            set(as_list(st["Action"])),
                            {"codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult", "codepipeline:GetJobDetails",
                             "autoscaling:DescribeInstanceRefreshes"},
                            name,
                        )

    def test_a_push_builds_the_agent_with_codebuild(self):
        res = load("artifacts.yml")["Resources"]
        rule = res["BuildOnPushRule"]["Properties"]
        self.assertEqual(rule["EventPattern"]["detail"]["referenceName"], [_Tag("!Ref", "BranchName")])
        (target,) = rule["Targets"]
        self.assertEqual(target["Arn"], _Tag("!GetAtt", "BuildProject.Arn"))
        self.assertEqual(res["BuildProject"]["Properties"]["Source"]["BuildSpec"], "pipeline/buildspec.yml")

    def test_the_publish_step_may_start_the_qat_image(self):
        res = load("artifacts.yml")["Resources"]
        (policy,) = res["BuildRole"]["Properties"]["Policies"]
        invoke = [st for st in statements(policy["PolicyDocument"]) if st["Action"] == "lambda:InvokeFunction"]
        self.assertEqual(len(invoke), 1)
        self.assertTrue(text(invoke[0]["Resource"]).endswith("function:${ProjectName}-start-qat-image)"))


if __name__ == "__main__":
    unittest.main()
