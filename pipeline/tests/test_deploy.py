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
    "AGENT_VERSION": "0.1.0",
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
        first_lambda_stack = next(i for l, i in index.items() if "lambdas.yml" in l)
        zips = [i for l, i in index.items() if l.startswith("aws s3 cp") and ".zip" in l]
        self.assertEqual(len(zips), 4)
        self.assertTrue(all(i < first_lambda_stack for i in zips))
        component = next(i for l, i in index.items() if "components/codedeploy-agent-1.0.0.yml" in l)
        self.assertLess(component, next(i for l, i in index.items() if "image-builder.yml" in l))

    def test_missing_settings_are_named(self):
        proc = dry_run({k: v for k, v in ENV.items() if k != "QC_EMAIL"} | {"QC_EMAIL": ""})
        self.assertEqual(proc.returncode, 2)
        self.assertIn("set QC_EMAIL", proc.stderr)


if __name__ == "__main__":
    unittest.main()
