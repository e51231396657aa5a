"""The five stacks through moto's CloudFormation, in order, for every resource moto models.

moto checks references, exports, parameter types and the order; it cannot check IAM, KMS,
CloudFormation's own validation of services it does not model, or any service runtime (those
are test_semantics.py's and the rehearsal's). Resources of types moto cannot model are left
out, with everything that refers to them, and recorded (UNMODELLED below is asserted, so a
template gaining a type moto lacks, or moto learning one, shows up here); exports of left-out
resources come from a stub stack. Everything else must reach CREATE_COMPLETE.
"""

import io
import json
import os
import re
import unittest
import zipfile

from test_templates import _Tag, load, text

ORDER = ["artifacts.yml", "environments.yml", "image-builder.yml", "lambdas.yml", "pipelines.yml"]
CI = os.environ.get("CI") == "true"

# What moto 5 cannot model, per template (the seed review's list, kept current by the test).
UNMODELLED = {
    "artifacts.yml": {"AWS::S3::BucketPolicy", "AWS::CodeCommit::Repository", "AWS::CodeBuild::Project", "AWS::SNS::TopicPolicy"},
    "environments.yml": {"AWS::EC2::SecurityGroupEgress", "AWS::S3::BucketPolicy", "AWS::CodeDeploy::Application",
                         "AWS::CodeDeploy::DeploymentGroup", "AWS::CloudWatch::Alarm", "Custom::ProdBlueGreenDeploymentGroup"},
    "image-builder.yml": {"AWS::ImageBuilder::Component", "AWS::ImageBuilder::ImageRecipe", "AWS::ImageBuilder::InfrastructureConfiguration",
                          "AWS::ImageBuilder::DistributionConfiguration", "AWS::ImageBuilder::ImagePipeline", "AWS::ImageBuilder::LifecyclePolicy"},
    "lambdas.yml": {"AWS::SNS::Subscription", "AWS::CloudWatch::Alarm"},
    "pipelines.yml": {"AWS::CodeBuild::Project", "AWS::CodePipeline::Pipeline", "AWS::IAM::Group"},
}


def to_json(value):
    """Short-form intrinsics to the JSON long form."""
    if isinstance(value, _Tag):
        v = to_json(value.value)
        name = {"!Ref": "Ref", "!Condition": "Condition"}.get(value.tag, "Fn::" + value.tag[1:])
        if value.tag == "!GetAtt" and isinstance(v, str):
            v = v.split(".", 1)
        return {name: v}
    if isinstance(value, dict):
        return {k: to_json(x) for k, x in value.items()}
    if isinstance(value, list):
        return [to_json(x) for x in value]
    return value


def refers_to(value, names):
    flat = text(value)
    return any(re.search(rf"(!Ref\({n}\)|!GetAtt\({n}\.|\$\{{{n}[}}.])", flat) for n in names)


def modelled(doc, supported):
    """The template without what moto cannot model and whatever refers to it; what was left out."""
    res = dict(doc["Resources"])
    removed = {k for k, r in res.items() if r["Type"] not in supported}
    types = {res[k]["Type"] for k in removed}
    changed = True
    while changed:
        changed = False
        for k, r in list(res.items()):
            if k in removed:
                continue
            deps = set(r.get("DependsOn", []) if isinstance(r.get("DependsOn"), list) else [r.get("DependsOn")])
            if refers_to(r.get("Properties", {}), removed) or deps & removed:
                removed.add(k)
                changed = True
    kept = {k: r for k, r in res.items() if k not in removed}
    outputs = {k: o for k, o in doc.get("Outputs", {}).items() if not refers_to(o, removed)}
    dropped_exports = [o["Export"]["Name"].value.replace("${ProjectName}", "codedeploy-agent")
                       for k, o in doc.get("Outputs", {}).items() if k not in outputs and "Export" in o]
    out = {**doc, "Resources": kept, "Outputs": outputs}
    if not outputs:
        out.pop("Outputs")
    return to_json(out), types, dropped_exports


class StacksInMoto(unittest.TestCase):
    def test_every_modelled_resource_creates_in_order(self):
        try:
            import boto3
            from moto import mock_aws
            from moto.cloudformation import parsing
        except ImportError as e:
            if CI:
                self.fail(f"moto is missing and CI=true: {e}")
            self.skipTest(f"moto is missing: {e}")
        supported = set(parsing.get_model_map()) if hasattr(parsing, "get_model_map") else set(parsing.MODEL_MAP)
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        with mock_aws():
            ec2 = boto3.client("ec2", region_name="us-east-1")
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{'ab'[i % 2]}")["Subnet"]["SubnetId"] for i in range(4)]
            cfn = boto3.client("cloudformation", region_name="us-east-1")
            s3 = boto3.client("s3", region_name="us-east-1")
            values = {
                "VpcId": vpc, "PrivateSubnetIds": ",".join(subnets[:2]), "PublicSubnetIds": ",".join(subnets[2:]),
                "BuilderSubnetId": subnets[0], "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
                "QcApproverEmail": "qc@example.com", "PmoApproverEmail": "pmo@example.com", "AlarmEmail": "ops@example.com",
                "LambdaCodeVersion": "c0ffee",
            }
            seen = {}
            for i, name in enumerate(ORDER):
                doc = load(name)
                body, types, stub_exports = modelled(doc, supported)
                seen[name] = types
                if stub_exports:
                    stub = {"Resources": {"Stub": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": f"/moto-stub/{i}", "Type": "String", "Value": "stub"}}},
                            "Outputs": {f"O{j}": {"Value": f"arn:aws:stub:us-east-1:123456789012:{e}", "Export": {"Name": e}}
                                        for j, e in enumerate(stub_exports)}}
                    cfn.create_stack(StackName=f"stubs-{i}", TemplateBody=json.dumps(stub))
                params = [{"ParameterKey": k, "ParameterValue": values[k]} for k, p in doc["Parameters"].items() if "Default" not in p]
                stack = f"codedeploy-agent-{name.split('.')[0]}"
                cfn.create_stack(StackName=stack, TemplateBody=json.dumps(body), Parameters=params, Capabilities=["CAPABILITY_NAMED_IAM"])
                status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
                self.assertEqual(status, "CREATE_COMPLETE", f"{name}: {cfn.describe_stack_events(StackName=stack)['StackEvents'][:3]}")
                if name == "artifacts.yml":
                    # The Lambda code the later stacks name (pipeline/deploy uploads it after stack 1).
                    bucket = next(o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"] if o["OutputKey"] == "ArtifactBucketName")
                    buf = io.BytesIO()
                    with zipfile.ZipFile(buf, "w") as z:
                        z.writestr("bootstrap", "#!/bin/sh\n")
                    for fn in ("start-image-pipeline", "start-code-pipeline", "check-distinct-approvers", "start-prod-image", "refresh-instances", "prod-deployment-group"):
                        s3.put_object(Bucket=bucket, Key=f"codedeploy-agent/lambdas/c0ffee/{fn}.zip", Body=buf.getvalue())
            self.assertEqual(seen, UNMODELLED, "resource types moto cannot model changed; update UNMODELLED (and pipeline/README.md)")


if __name__ == "__main__":
    unittest.main()
