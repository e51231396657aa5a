"""cfn-nag on every template, through the Python statement of its rules (cfn_nag_rules.py).

cfn-nag itself runs in the infrastructure pipeline's Lint stage (pipeline/buildspec-infra.yml);
its Ruby gem cannot be installed on the development or CI machines (no gem host), so these tests
stand in for it here: every template is clean under the rules that apply to its resource types,
every suppression has a reason and still suppresses something, and each rule finds what it is
for in a template that breaks it.
"""

import tempfile
import textwrap
import unittest
from pathlib import Path

import yaml

import cfn_nag_rules as nag

PIPELINE = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((PIPELINE / "templates").glob("*.yml"))


def scan_text(text, **kw):
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(textwrap.dedent(text))
    try:
        return {(rule, logical) for rule, logical, _ in nag.scan(f.name, **kw)}
    finally:
        Path(f.name).unlink()


class Templates(unittest.TestCase):
    def test_every_template_passes_cfn_nag_with_warnings_failing(self):
        self.assertGreaterEqual(len(TEMPLATES), 7)
        for path in TEMPLATES:
            with self.subTest(template=path.name):
                self.assertEqual(nag.scan(path), [], f"cfn_nag_scan --fail-on-warnings would fail on {path.name}")

    def test_every_suppression_has_a_reason_and_still_suppresses_a_finding(self):
        for path in TEMPLATES:
            t = nag.Template(path)
            raw = {(rule, logical) for rule, logical, _ in nag.scan(path, honour_suppressions=False)}
            for logical, res in t.resources.items():
                for rule, reason in nag.suppressions(res).items():
                    with self.subTest(template=path.name, resource=logical, rule=rule):
                        self.assertGreater(len(reason.strip()), 20, "a suppression says why")
                        self.assertIn((rule, logical), raw, "stale suppression: the rule no longer fires here")

    def test_the_deny_list_is_short_and_says_why(self):
        denied = nag.deny_list()
        self.assertEqual(set(denied), {"W28", "W89", "W92"})
        for rule, reason in denied.items():
            self.assertGreater(len(reason), 40, rule)
        known = {r[0] for r in nag.RULES}
        self.assertLessEqual(set(denied), known)

    def test_lint_stage_runs_the_pinned_cfn_nag_failing_on_warnings_with_the_deny_list(self):
        spec = yaml.safe_load((PIPELINE / "buildspec-infra.yml").read_text())
        build = "\n".join(spec["phases"]["build"]["commands"])
        self.assertIn("cfn_nag_scan --input-path pipeline/templates --fail-on-warnings --deny-list-path pipeline/cfn-nag-deny-list.yml", build)
        install = "\n".join(spec["phases"]["install"]["commands"])
        self.assertIn('gem install --no-document cfn-nag -v "$CFN_NAG_VERSION"', install)
        self.assertRegex(spec["env"]["variables"]["CFN_NAG_VERSION"], r"^\d+\.\d+\.\d+$")


# A template that breaks one rule per resource, and the finding each must produce.
BROKEN = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Cidr:
    Type: String
Conditions:
  Never: !Equals ["a", "b"]
Resources:
  AdminRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: admin
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: ec2.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: everything
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: "s3:*"
                Resource: "*"
  PassAnyRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: ec2.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: pass
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: iam:PassRole
                Resource: "*"
  Complex:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: many-services
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [s3:GetObject, sqs:SendMessage, sns:Publish, kms:Decrypt, ec2:DescribeImages, ssm:GetParameter, cloudwatch:PutMetricData, events:PutEvents]
                Resource:
                  - !Sub "arn:${AWS::Partition}:s3:::b/*"
                  - !Sub "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:q"
                  - !Sub "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:t"
                  - !Sub "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/k"
                  - !Sub "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/p"
                  - !Sub "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:g"
                Condition:
                  StringEqualsIfExists: {"aws:ResourceTag/a": "${aws:PrincipalTag/a}"}
                  "Null": {"aws:ResourceTag/a": "false"}
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Role: !GetAtt Complex.Arn
      Runtime: provided.al2023
      Handler: bootstrap
      Code: {ZipFile: "x"}
  PublicBucket:
    Type: AWS::S3::Bucket
  PublicBucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref PublicBucket
      PolicyDocument:
        Statement:
          - Effect: Allow
            Principal: "*"
            Action: "s3:*"
            Resource: !Sub "${PublicBucket.Arn}/*"
  Topic:
    Type: AWS::SNS::Topic
  TopicPolicy:
    Type: AWS::SNS::TopicPolicy
    Properties:
      Topics: [!Ref Topic]
      PolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {AWS: "*"}
            Action: sns:Publish
            Resource: !Ref Topic
  Key:
    Type: AWS::KMS::Key
    Properties:
      KeyPolicy:
        Statement:
          - Effect: Allow
            Principal: {AWS: "*"}
            Action: kms:Decrypt
            Resource: "*"
  Open:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: open
      SecurityGroupIngress:
        - IpProtocol: tcp
          FromPort: 22
          ToPort: 23
          CidrIp: 0.0.0.0/0
  OpenEgress:
    Type: AWS::EC2::SecurityGroup
    Condition: Never
    Properties:
      GroupDescription: egress
      SecurityGroupEgress:
        - Description: anywhere
          IpProtocol: "-1"
          CidrIp: !If [Never, 10.0.0.0/8, 0.0.0.0/0]
  Logs:
    Type: AWS::Logs::LogGroup
  Build:
    Type: AWS::CodeBuild::Project
    Properties:
      Name: b
  Queue:
    Type: AWS::SQS::Queue
  Listener:
    Type: AWS::ElasticLoadBalancingV2::Listener
    Properties:
      Protocol: HTTPS
      SslPolicy: ELBSecurityPolicy-2016-08
  Lb:
    Type: AWS::ElasticLoadBalancingV2::LoadBalancer
    Properties:
      LoadBalancerAttributes:
        - Key: access_logs.s3.enabled
          Value: "false"
"""

EXPECTED = {
    ("F3", "AdminRole"), ("W11", "AdminRole"),
    ("F38", "PassAnyRole"), ("W11", "PassAnyRole"),
    ("W76", "Complex"),
    ("W58", "Fn"),
    ("F15", "PublicBucketPolicy"), ("F16", "PublicBucketPolicy"),
    ("W35", "PublicBucket"), ("W41", "PublicBucket"),
    ("F18", "TopicPolicy"), ("W47", "Topic"),
    ("F19", "Key"), ("F76", "Key"),
    ("W2", "Open"), ("W9", "Open"), ("W27", "Open"), ("W36", "Open"), ("F1000", "Open"),
    # cfn_nag_scan evaluates every condition as true: Fn::If takes its first branch, and a
    # resource whose condition is false is scanned all the same.
    ("W40", "OpenEgress"),
    ("W84", "Logs"), ("W86", "Logs"),
    ("W32", "Build"), ("W48", "Queue"), ("W55", "Listener"), ("W52", "Lb"),
}


class Rules(unittest.TestCase):
    def test_each_rule_finds_its_breakage(self):
        found = scan_text(BROKEN)
        self.assertLessEqual(EXPECTED, found, f"missed: {sorted(EXPECTED - found)}")
        # W28 (explicit RoleName), W89 and W92 (the function) are on the deny list.
        self.assertFalse({f for f in found if f[0] in {"W28", "W89", "W92"}})
        unexpected = found - EXPECTED - {("W51", "PublicBucket")}
        self.assertEqual(unexpected, set())

    def test_condition_true_branch_is_what_cfn_nag_reads(self):
        # The false branch would be 0.0.0.0/0: cfn-nag reads the first branch, so W5 stays quiet.
        self.assertNotIn(("W5", "OpenEgress"), scan_text(BROKEN))

    def test_a_suppression_silences_only_its_rule_on_its_resource(self):
        suppressed = BROKEN.replace(
            "  AdminRole:\n    Type: AWS::IAM::Role\n",
            "  AdminRole:\n    Type: AWS::IAM::Role\n    Metadata:\n      cfn_nag:\n        rules_to_suppress:\n"
            "          - id: F3\n            reason: fixture\n",
        )
        found = scan_text(suppressed)
        self.assertNotIn(("F3", "AdminRole"), found)
        self.assertIn(("W11", "AdminRole"), found)

    def test_lambda_role_with_log_permissions_passes_w58(self):
        ok = BROKEN.replace(
            "Action: [s3:GetObject, sqs:SendMessage",
            "Action: [logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents, s3:GetObject, sqs:SendMessage",
        )
        self.assertNotIn(("W58", "Fn"), scan_text(ok))

    def test_spcm_counts_like_cfn_nag(self):
        # Base 1, 9 services (8 extra) x 2, 1 resource service (logs) not among the actions', two
        # condition operators x 2, IfExists 1, Null 1, one policy variable 1: 25, the threshold.
        doc = yaml.load(textwrap.dedent(BROKEN), Loader=nag._Loader)["Resources"]["Complex"]["Properties"]["Policies"][0]["PolicyDocument"]
        self.assertEqual(nag.policy_metric(doc), 1 + 8 * 2 + 1 + 2 * 2 + 1 + 1 + 1)
        self.assertEqual(nag.SPCM_THRESHOLD, 25)


if __name__ == "__main__":
    unittest.main()
