"""The AWSTOE component image-builder-components/codedeploy-agent.yml.

Checks the document against the AWSTOE schema rules (schemaVersion 1.0; unique phase names from
build/validate/test; unique step names per phase; known actions and their input shapes;
onFailure/timeoutSeconds/maxAttempts values; every {{ Name }} is a declared parameter or a
chaining expression to an earlier step), then runs the build phase's bash steps against a
temporary root with a fake artifact built here: a tarball holding a stub binary, the config,
the unit and an install.sh of the agreed shape (`install.sh --no-start`, honouring DESTDIR).

Run: python3 -m unittest discover -s pipeline/tests   (scripts/test does).
"""

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
import unittest
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "image-builder-components" / "codedeploy-agent.yml"
DEFAULT_WORKDIR = "/tmp/codedeploy-agent-install"

PHASES = {"build", "validate", "test"}
ACTIONS = {"ExecuteBash", "S3Download", "DeleteFile", "CreateFile", "Reboot", "ExecuteBinary"}
STEP_KEYS = {"name", "action", "inputs", "timeoutSeconds", "onFailure", "maxAttempts", "if", "loop"}
PLACEHOLDER = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")

# With prepare-image: `prepare-image --help` succeeds and a real call records its arguments.
PREPARE_CASE = """  prepare-image)
    [ "$2" = --help ] && exit 0
    echo "$@" > "$(dirname "$0")/../prepare-image-ran" ;;
"""

STUB_BINARY = """#!/bin/sh
case "$1" in
  --version) echo "codedeploy-agent {version}" ;;
  --help) printf 'Usage: codedeploy-agent <COMMAND>\\n\\nCommands:\\n  validate\\n  local\\n  run\\n{extra}' ;;
{prepare_case}  *) exit 2 ;;
esac
"""

# The agreed install.sh shape: installs binary, config (kept if present) and unit under
# $DESTDIR; --no-start means enable nothing and start nothing.
INSTALL_SH = """#!/bin/bash
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
start=1
for arg in "$@"; do [[ "$arg" == --no-start ]] && start=0; done
install -D -m 0755 "$here/bin/codedeploy-agent" "$DESTDIR/opt/codedeploy-agent/bin/codedeploy-agent"
if [[ ! -e "$DESTDIR/etc/codedeploy-agent/conf/codedeployagent.yml" ]]; then
  install -D -m 0644 "$here/conf/codedeployagent.yml" "$DESTDIR/etc/codedeploy-agent/conf/codedeployagent.yml"
fi
install -D -m 0644 "$here/systemd/codedeploy-agent.service" "$DESTDIR/etc/systemd/system/codedeploy-agent.service"
mkdir -p "$DESTDIR/opt/codedeploy-agent/deployment-root" "$DESTDIR/var/log/aws/codedeploy-agent"
[[ $start == 1 ]] && echo started > "$DESTDIR/started-by-install-sh"
exit 0
"""

UNIT = """[Unit]
Description=AWS CodeDeploy host agent (Rust)
After=network-online.target

[Service]
ExecStart=/opt/codedeploy-agent/bin/codedeploy-agent run
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def load():
    return yaml.safe_load(COMPONENT.read_text())


def steps(doc, phase):
    return next(p["steps"] for p in doc["phases"] if p["name"] == phase)


def substitute(text, params):
    """Replaces {{ Name }} the way AWSTOE does for parameters."""
    return PLACEHOLDER.sub(lambda m: params[m.group(1)], text)


def make_artifact(directory, version, arch, with_prepare_image):
    """Builds codedeploy-agent-<version>-<arch>.tar.gz with one top-level directory."""
    top = f"codedeploy-agent-{version}-{arch}"
    files = {
        f"{top}/install.sh": (INSTALL_SH, 0o755),
        f"{top}/bin/codedeploy-agent": (
            STUB_BINARY.format(
                version=version,
                extra="  prepare-image\\n" if with_prepare_image else "",
                prepare_case=PREPARE_CASE if with_prepare_image else "",
            ),
            0o755,
        ),
        f"{top}/conf/codedeployagent.yml": (":log_dir: '/var/log/aws/codedeploy-agent/'\n", 0o644),
        f"{top}/systemd/codedeploy-agent.service": (UNIT, 0o644),
    }
    path = Path(directory) / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, (body, mode) in files.items():
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return path



OS_RELEASES = {
    "al2023": 'ID="amzn"\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023.6.20250107"\n',
    "ubuntu2204": 'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.5 LTS"\n',
    "ubuntu2404": 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
    "debian12": 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
}


def os_environment(tmp, os_set, machine):
    """The environment for one parameter set: its /etc/os-release, its `uname -m`, and
    dnf/apt-get stubs first on PATH that record how they were called (the real package
    managers would change this machine)."""
    release = Path(tmp) / f"os-release-{os_set}"
    release.write_text(OS_RELEASES[os_set])
    stubs = Path(tmp) / "stubs"
    stubs.mkdir(exist_ok=True)
    log = Path(tmp) / "package-manager.log"
    for manager in ("dnf", "apt-get"):
        stub = stubs / manager
        stub.write_text(f'#!/bin/sh\necho "{manager} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {**os.environ, "CDA_OS_RELEASE": str(release), "CDA_MACHINE": machine, "PATH": f"{stubs}:{os.environ['PATH']}"}
    return env, log


def agent_binary():
    """The real agent built by cargo (debug, else release), or None."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    for profile in ("debug", "release"):
        path = target / profile / "codedeploy-agent"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


class Schema(unittest.TestCase):
    def test_top_level(self):
        doc = load()
        self.assertEqual(str(doc["schemaVersion"]), "1.0")
        self.assertEqual(doc["name"], "codedeploy-agent")
        self.assertTrue(doc["description"])
        self.assertEqual(set(doc) - {"name", "description", "schemaVersion", "parameters", "phases"}, set())

    def test_phases_are_build_validate_test_once_each_in_order(self):
        names = [p["name"] for p in load()["phases"]]
        self.assertEqual(names, ["build", "validate", "test"])
        self.assertTrue(set(names) <= PHASES)

    def test_steps_follow_the_schema(self):
        for phase in load()["phases"]:
            names = [s["name"] for s in phase["steps"]]
            self.assertEqual(len(names), len(set(names)), f"duplicate step names in {phase['name']}")
            for step in phase["steps"]:
                where = f"{phase['name']}.{step['name']}"
                self.assertRegex(step["name"], r"^[A-Za-z][A-Za-z0-9]*$", where)
                self.assertIn(step["action"], ACTIONS, where)
                self.assertEqual(set(step) - STEP_KEYS, set(), where)
                self.assertIn("inputs", step, where)
                self.assertIn(step.get("onFailure", "Abort"), {"Abort", "Continue", "Ignore"}, where)
                timeout = step.get("timeoutSeconds", 7200)
                self.assertTrue(timeout == -1 or timeout > 0, where)
                self.assertGreaterEqual(step.get("maxAttempts", 1), 1, where)
                if step["action"] == "ExecuteBash":
                    commands = step["inputs"]["commands"]
                    self.assertIsInstance(commands, list, where)
                    self.assertTrue(all(isinstance(c, str) for c in commands), where)
                    self.assertEqual(commands[0], "set -euo pipefail", where)
                if step["action"] == "S3Download":
                    for item in step["inputs"]:
                        self.assertTrue(item["source"].startswith("s3://"), where)
                        self.assertTrue(item["destination"].startswith("/"), where)

    def test_parameters_are_declared_strings_and_all_used(self):
        doc = load()
        declared = {}
        for entry in doc["parameters"]:
            ((name, spec),) = entry.items()
            self.assertRegex(name, r"^[A-Za-z0-9]+$")
            self.assertEqual(spec["type"], "string", name)
            self.assertTrue(spec["description"], name)
            declared[name] = spec
        self.assertLessEqual({"Version", "ArtifactBucket", "Sha256"}, set(declared))
        used = set(PLACEHOLDER.findall(COMPONENT.read_text().split("\nphases:", 1)[1]))
        chained = {u for u in used if "." in u}
        self.assertEqual(used - chained, set(declared), "declared vs used parameters")
        for ref in chained:  # chaining: phase.step.inputs/outputs...
            phase, step = ref.split(".")[:2]
            self.assertIn(step, [s["name"] for s in steps(doc, phase)], ref)

    def test_build_installs_without_starting_and_validate_checks_it(self):
        doc = load()
        build = "\n".join("\n".join(s["inputs"]["commands"]) for s in steps(doc, "build") if s["action"] == "ExecuteBash")
        self.assertIn("--no-start", build)
        self.assertIn("enable codedeploy-agent.service", build)
        self.assertNotRegex(build, r"systemctl\s+(\$\{[^}]*\}\s+)?(start|restart)\b")
        validate = "\n".join("\n".join(s["inputs"]["commands"]) for s in steps(doc, "validate"))
        self.assertIn("is-enabled", validate)
        self.assertIn("--version", validate)
        test = "\n".join("\n".join(s["inputs"]["commands"]) for s in steps(doc, "test"))
        self.assertIn("systemctl start codedeploy-agent.service", test)


def require_tool(tool, why):
    """Skip when `tool` is missing on a developer's machine; under CI=true run the tests anyway,
    so they fail (scripts/test installs what they need: a skip in CI is a broken install)."""
    if shutil.which(tool):
        return lambda cls: cls
    line = f"skipped: needs {tool} ({why})"
    if os.environ.get("CI", "").lower() not in ("true", "1"):
        return unittest.skip(line)

    def fail(cls):
        def setUpClass(_cls):
            raise AssertionError(f"{line}\nCI=true: a test may not skip; the install step is broken")

        cls.setUpClass = classmethod(setUpClass)
        return cls

    return fail


@require_tool("systemctl", "for systemctl --root enable; apt-get install -y systemd")
class BuildPhase(unittest.TestCase):
    """Runs the build phase's ExecuteBash steps in order against a temporary root."""

    def run_build(self, with_prepare_image=False, sha=None, leftovers=True, os_set="al2023", arch="x86_64", machine=None):
        tmp = Path(tempfile.mkdtemp(prefix="cda-component-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        root, work = tmp / "root", tmp / "work"
        root.mkdir()
        # State a previous run could have left in the image: must be gone afterwards.
        if leftovers:
            for d in ["opt/codedeploy-agent/deployment-root/abc/d-1", "var/log/aws/codedeploy-agent", "opt/codedeploy-agent/state/.pid"]:
                (root / d).mkdir(parents=True)
            (root / "var/log/aws/codedeploy-agent/codedeploy-agent.log").write_text("old\n")
            (root / "opt/codedeploy-agent/state/.pid/codedeploy-agent.pid").write_text("42\n")
        doc = load()
        artifact = make_artifact(tmp, "1.2.3", arch, with_prepare_image)
        env, self.pkg_log = os_environment(tmp, os_set, machine or arch)
        params = {
            "Commit": "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6",
            "Version": "1.2.3",
            "Arch": arch,
            "ArtifactBucket": "bucket",
            "ArtifactPrefix": "codedeploy-agent",
            "Sha256": sha or hashlib.sha256(artifact.read_bytes()).hexdigest(),
        }
        results = []
        for step in steps(doc, "build"):
            if step["action"] == "S3Download":
                (item,) = step["inputs"]
                self.assertEqual(
                    substitute(item["source"], params),
                    f"s3://bucket/codedeploy-agent/agent/c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6/codedeploy-agent-1.2.3-{arch}.tar.gz",
                )
                dest = Path(item["destination"])
                self.assertEqual(str(dest.parent), DEFAULT_WORKDIR)
                (work / dest.name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(artifact, work / dest.name)
                continue
            script = "\n".join(substitute(c, params) for c in step["inputs"]["commands"])
            proc = subprocess.run(
                ["bash", "-c", script],
                env={**env, "CDA_ROOT": str(root), "CDA_WORKDIR": str(work)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            results.append((step["name"], proc))
            if proc.returncode != 0:
                break
        return root, work, results

    def test_install_produces_the_expected_files_enabled_not_started(self):
        root, work, results = self.run_build()
        for name, proc in results:
            self.assertEqual(proc.returncode, 0, f"{name}: {proc.stderr}")
        self.assertEqual(
            [n for n, _ in results],
            ["CheckPlatform", "InstallPrerequisites", "VerifyChecksum", "InstallAgent", "EnableService", "PrepareImage"],
        )
        binary = root / "opt/codedeploy-agent/bin/codedeploy-agent"
        self.assertTrue(os.access(binary, os.X_OK))
        self.assertTrue((root / "etc/codedeploy-agent/conf/codedeployagent.yml").is_file())
        self.assertTrue((root / "etc/systemd/system/codedeploy-agent.service").is_file())
        wants = root / "etc/systemd/system/multi-user.target.wants/codedeploy-agent.service"
        self.assertTrue(wants.is_symlink(), "unit not enabled")
        self.assertFalse((root / "started-by-install-sh").exists(), "install.sh ran without --no-start")
        # Cleanup for imaging: no deployment state, pid files or logs; the directories stay.
        self.assertEqual(list((root / "opt/codedeploy-agent/deployment-root").iterdir()), [])
        self.assertEqual(list((root / "var/log/aws/codedeploy-agent").iterdir()), [])
        self.assertEqual(list((root / "opt/codedeploy-agent/state/.pid").iterdir()), [])
        self.assertFalse(work.exists(), "work directory left in the image")

    def test_prepare_image_is_used_when_the_agent_lists_it(self):
        root, _, results = self.run_build(with_prepare_image=True)
        self.assertTrue(all(p.returncode == 0 for _, p in results), [p.stderr for _, p in results])
        ran = (root / "opt/codedeploy-agent/prepare-image-ran").read_text().split()
        self.assertEqual(ran, ["prepare-image", "--config", str(root / "etc/codedeploy-agent/conf/codedeployagent.yml")])
        # prepare-image owns the clean-up then; the stub does not clean, so leftovers remain.
        self.assertTrue((root / "var/log/aws/codedeploy-agent/codedeploy-agent.log").exists())

    def test_a_failing_prepare_image_aborts_the_build(self):
        # prepare-image refuses (agent running, command in flight): the image must not be taken.
        global PREPARE_CASE
        saved = PREPARE_CASE
        PREPARE_CASE = saved.replace('echo "$@" >', 'echo "refused" >&2; exit 1; echo >')
        try:
            _, _, results = self.run_build(with_prepare_image=True)
        finally:
            PREPARE_CASE = saved
        name, proc = results[-1]
        self.assertEqual(name, "PrepareImage")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("refused", proc.stderr)

    def test_checksum_mismatch_aborts_before_installing(self):
        root, _, results = self.run_build(sha="0" * 64)
        self.assertEqual([n for n, _ in results], ["CheckPlatform", "InstallPrerequisites", "VerifyChecksum"])
        self.assertNotEqual(results[-1][1].returncode, 0)
        self.assertIn("checksum mismatch", results[-1][1].stderr)
        self.assertFalse((root / "opt/codedeploy-agent/bin").exists())

    def test_malformed_checksum_parameter_is_rejected(self):
        _, _, results = self.run_build(sha="not-a-sha")
        self.assertIn("not 64 hex characters", results[-1][1].stderr)

    def test_ubuntu_and_al2023_parameter_sets_use_their_package_manager(self):
        for os_set, arch, manager in [("al2023", "x86_64", "dnf"), ("ubuntu2204", "aarch64", "apt-get"), ("ubuntu2404", "x86_64", "apt-get")]:
            with self.subTest(os_set=os_set, arch=arch):
                root, _, results = self.run_build(os_set=os_set, arch=arch)
                for name, proc in results:
                    self.assertEqual(proc.returncode, 0, f"{name}: {proc.stderr}")
                self.assertIn(f"on {arch}", results[0][1].stdout)
                (call,) = self.pkg_log.read_text().splitlines()
                self.assertTrue(call.startswith(f"{manager} install -y"), call)
                for pkg in ["tar", "gzip", "coreutils", "systemd"]:
                    self.assertIn(pkg, call.split())
                self.assertTrue(os.access(root / "opt/codedeploy-agent/bin/codedeploy-agent", os.X_OK))

    def test_architecture_mismatch_and_unsupported_os_abort_first(self):
        _, _, results = self.run_build(arch="aarch64", machine="x86_64")
        self.assertEqual([n for n, _ in results], ["CheckPlatform"])
        self.assertIn("this instance is x86_64 but the recipe asks for the aarch64 artifact", results[0][1].stderr)
        _, _, results = self.run_build(os_set="debian12")
        self.assertEqual([n for n, _ in results], ["CheckPlatform"])
        self.assertIn("unsupported OS", results[0][1].stderr)
        _, _, results = self.run_build(arch="arm64", machine="arm64")
        self.assertIn("Arch must be x86_64 or aarch64", results[0][1].stderr)


class TestPhase(unittest.TestCase):
    """The test phase's LocalDeploymentWorks step with the real agent binary: a `codedeploy-agent
    local` deployment of the bundle the step writes, under a scratch configuration."""

    def test_local_deployment_installs_the_file_and_runs_the_hook(self):
        agent = agent_binary()
        if agent is None:
            if os.environ.get("CI") == "true":
                self.fail("target/*/codedeploy-agent missing: run cargo build first")
            self.skipTest("skipped: no built codedeploy-agent (cargo build)")
        (step,) = [s for s in steps(load(), "test") if s["name"] == "LocalDeploymentWorks"]
        script = "\n".join(step["inputs"]["commands"])
        proc = subprocess.run(
            ["bash", "-c", script], env={**os.environ, "CDA_AGENT": str(agent)}, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("deployed the test bundle and ran its hook", proc.stdout)

    def test_a_failing_hook_fails_the_step(self):
        agent = agent_binary()
        if agent is None:
            if os.environ.get("CI") == "true":
                self.fail("target/*/codedeploy-agent missing: run cargo build first")
            self.skipTest("skipped: no built codedeploy-agent (cargo build)")
        (step,) = [s for s in steps(load(), "test") if s["name"] == "LocalDeploymentWorks"]
        script = "\n".join(step["inputs"]["commands"]).replace('grep -qx "hello from the image test" "$work/installed/hello.txt"\necho', "exit 3\necho", 1)
        self.assertIn("exit 3", script)
        proc = subprocess.run(
            ["bash", "-c", script], env={**os.environ, "CDA_AGENT": str(agent)}, capture_output=True, text=True, timeout=120
        )
        self.assertNotEqual(proc.returncode, 0, proc.stdout)


if __name__ == "__main__":
    unittest.main()
