"""pipeline/deploy --dry-run: the five stacks in dependency order, each given every parameter
that has no default, the Lambda zips and the component uploaded before the stacks that use
them."""

import os
import re
import subprocess
import unittest
from pathlib import Path

from test_templates import load

REPO = Path(__file__).resolve().parents[2]
ENV = {
    "VPC_ID": "vpc-1",
    "PRIVATE_SUBNETS": "subnet-a,subnet-b",
    "PUBLIC_SUBNETS": "subnet-c,subnet-d",
    "BUILDER_SUBNET": "subnet-a",
    "CERTIFICATE_ARN": "arn:aws:acm:us-east-1:123456789012:certificate/x",
    "QC_EMAIL": "qc@example.com",
    "PMO_EMAIL": "pmo@example.com",
    "ALARM_EMAIL": "ops@example.com",
}


def dry_run(env):
    return subprocess.run(
        [str(REPO / "pipeline/deploy"), "--dry-run"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class DeployScript(unittest.TestCase):
    def test_stacks_in_order_with_every_required_parameter(self):
        proc = dry_run(ENV)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = proc.stdout.splitlines()
        deploys = [l for l in lines if l.startswith("aws cloudformation deploy")]
        templates = [re.search(r"--template-file pipeline/templates/(\S+)", l).group(1) for l in deploys]
        self.assertEqual(templates, ["artifacts.yml", "environments.yml", "image-builder.yml", "lambdas.yml", "pipelines.yml"])
        for line, template in zip(deploys, templates):
            given = set(re.findall(r" (\w+)=", line.split("--parameter-overrides", 1)[1]))
            required = {k for k, v in load(template)["Parameters"].items() if "Default" not in v}
            self.assertLessEqual(required, given, template)
            self.assertLessEqual(given, set(load(template)["Parameters"]), template)
        index = {l: i for i, l in enumerate(lines)}
        # The custom resource's function is in environments.yml: every zip precedes it.
        first_lambda_stack = next(i for l, i in index.items() if "environments.yml" in l)
        zips = [i for l, i in index.items() if l.startswith("aws s3 cp") and ".zip" in l]
        self.assertEqual(len(zips), 6)
        self.assertTrue(all(i < first_lambda_stack for i in zips))
        component = next(i for l, i in index.items() if "components/codedeploy-agent-1.0.0.yml" in l)
        self.assertLess(component, next(i for l, i in index.items() if "image-builder.yml" in l))

    def test_bootstrap_creates_the_service_linked_role_first_and_releases_last(self):
        # KMS refuses a key policy naming a role that does not exist (artifacts.yml names the
        # Image Builder service-linked role), so it is created before stack 1; the release
        # (push, wait for QAT) comes after the last stack.
        lines = dry_run(ENV).stdout.splitlines()
        slr = next(i for i, l in enumerate(lines) if "create-service-linked-role" in l and "imagebuilder.amazonaws.com" in l)
        stack1 = next(i for i, l in enumerate(lines) if "artifacts.yml" in l)
        last = max(i for i, l in enumerate(lines) if l.startswith("aws cloudformation deploy"))
        push = next(i for i, l in enumerate(lines) if " push " in l)
        self.assertLess(slr, stack1)
        self.assertGreater(push, last)
        self.assertFalse(any("update-auto-scaling-group" in l for l in lines), "no out-of-band launch template versions")

    def test_missing_output_stops_the_script(self):
        # awscli prints "None" for a missing output (moto does so for change-set stacks); the
        # script must stop there, never carry on to s3://None/.
        import tempfile
        with tempfile.TemporaryDirectory() as fake:
            aws = Path(fake) / "aws"
            aws.write_text('#!/bin/sh\ncase "$*" in *describe-stacks*) echo None ;; esac\nexit 0\n')
            aws.chmod(0o755)
            proc = subprocess.run(
                [str(REPO / "pipeline/deploy"), "--no-release"],
                env={**os.environ, **ENV, "PATH": f"{fake}:{os.environ['PATH']}"},
                capture_output=True, text=True, timeout=60,
            )
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("has no output ArtifactBucketName", proc.stderr)
        self.assertNotIn("s3://None", proc.stdout + proc.stderr)

    def test_missing_settings_are_named(self):
        proc = dry_run({k: v for k, v in ENV.items() if k != "QC_EMAIL"} | {"QC_EMAIL": ""})
        self.assertEqual(proc.returncode, 2)
        self.assertIn("set QC_EMAIL", proc.stderr)


if __name__ == "__main__":
    unittest.main()
