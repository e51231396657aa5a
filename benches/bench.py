#!/usr/bin/env python3
"""The benchmark runner behind `benches/run` (see there for usage).

Runs every workload as a whole deployment through `codedeploy-agent local` on a temporary
deployment root, next to the shell baseline, with hyperfine; takes the other measurements;
renders docs/benchmarks.md (or --out). Everything it creates under /dev/shm and on disk it
removes; every process it starts it stops.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GEN = os.path.join(HERE, "gen.py")
GIB = 1 << 30
MIB = 1 << 20

# Sizes per mode. "small": file counts of the many-small-files workloads; "large": bytes of
# the four large files; "runs": hyperfine timing runs per command.
MODES = {
    "full": dict(small=[10_000, 100_000], large=2 * GIB, runs=5, runs_small=5, s3=128 * MIB,
                 deploys=20, idle=60, disk=10_000, disk_runs=5, hooks=100),
    "quick": dict(small=[2_000, 10_000], large=128 * MIB, runs=3, runs_small=5, s3=32 * MIB,
                  deploys=3, idle=10, disk=2_000, disk_runs=3, hooks=100),
    "smoke": dict(small=[200], large=4 * MIB, runs=2, runs_small=2, s3=0,
                  deploys=0, idle=0, disk=0, disk_runs=0, hooks=5),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs a shell command, failing loudly."""
    r = subprocess.run(cmd, shell=True, executable="/bin/bash", **kw)
    if r.returncode != 0:
        raise SystemExit(f"benches: command failed ({r.returncode}): {cmd}")
    return r


def out(cmd):
    return subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True,
                          text=True).stdout.strip()


def q(p):
    return shlex.quote(str(p))


class Bench:
    def __init__(self, args):
        self.a = args
        self.m = MODES[args.mode]
        self.bin = os.path.abspath(args.bin)
        self.results = {"mode": args.mode, "cells": [], "other": {}, "notes": [],
                        "profiles": {}}
        self.procs = []  # (Popen) started by us, killed at exit
        self.dirs = []   # temporary directories, removed at exit
        if os.geteuid() == 0:
            self.owner, self.group = "nobody", "nogroup"
        else:
            self.owner = out("id -un")
            self.group = out("id -gn")

    # ---------------------------------------------------------------------------- plumbing

    def mkwork(self, parent, label):
        d = tempfile.mkdtemp(prefix=f"cdbench-{label}-", dir=parent)
        self.dirs.append(d)
        return d

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for d in self.dirs:
            if self.a.keep:
                log(f"kept {d}")
            else:
                shutil.rmtree(d, ignore_errors=True)

    def env(self):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("AWS_"):
                del e[k]
        e["AWS_EC2_METADATA_DISABLED"] = "true"
        e.pop("CODEDEPLOY_LOG", None)
        return e

    def world(self, base, name):
        """A deployment world: config, agent root and log, destination, baseline staging."""
        w = os.path.join(base, name)
        os.makedirs(w)
        conf = os.path.join(w, "conf.yml")
        with open(conf, "w") as f:
            f.write(f":root_dir: {w}/root\n:log_dir: {w}/log\n:pid_dir: {w}/pid\n"
                    f":max_revisions: 5\n:verbose: false\n"
                    f":on_premises_config_file: {w}/no-onprem.yml\n")
        return dict(dir=w, conf=conf, root=f"{w}/root", log=f"{w}/log", dest=f"{w}/dest",
                    stage=f"{w}/stage")

    def gen(self, *args):
        sh(f"python3 {q(GEN)} " + " ".join(q(a) for a in args)
           + f" --owner {q(self.owner)} --group {q(self.group)}")

    @staticmethod
    def archive(src, dst, kind, level=None):
        if kind == "tgz":
            gz = f"gzip -{level}" if level else "gzip"
            sh(f"tar -C {q(src)} -cf - . | {gz} > {q(dst)}")
        elif kind == "tar":
            sh(f"tar -C {q(src)} -cf {q(dst)} .")
        else:
            sh(f"cd {q(src)} && zip -q -r -y {q(dst)} .")

    def agent_cmd(self, w, bundle, kind, group="bench"):
        return (f"{q(self.bin)} local -c {q(w['conf'])} -l {q(bundle)} -t {kind} -g {group} "
                f">/dev/null")

    def baseline_cmd(self, w, bundle, kind):
        extract = (f"tar -xzf {q(bundle)} -C {q(w['stage'])}" if kind == "tgz"
                   else f"unzip -q {q(bundle)} -d {q(w['stage'])}")
        d = q(w["dest"])
        return (f"{extract} && cp -a {q(w['stage'])}/. {d}/ && chmod -R a-x,u=rwX,g=rX,o= {d} "
                f"&& chown -R {self.owner}:{self.group} {d}")

    def reset_agent(self, w):
        return f"rm -rf {q(w['root'])} {q(w['dest'])} && mkdir -p {q(w['dest'])}"

    def reset_baseline(self, w):
        return (f"rm -rf {q(w['stage'])} {q(w['dest'])} && mkdir -p {q(w['stage'])} "
                f"{q(w['dest'])}")

    def hyperfine(self, name, commands, prepares, runs, warmup=0, shell=True):
        """Runs hyperfine over `commands` (label -> command); returns label -> stats."""
        js = os.path.join(self.work, f"hf-{len(self.results['cells'])}-{os.getpid()}.json")
        cmd = ["hyperfine", "--style", "basic", "--runs", str(runs), "--warmup", str(warmup),
               "--export-json", js]
        if not shell:
            cmd += ["-N"]
        for p in prepares:
            cmd += ["--prepare", p]
        labels = list(commands)
        for label in labels:
            cmd += ["--command-name", label, commands[label]]
        log(f"{name}: hyperfine {', '.join(labels)} ({runs} runs)")
        r = subprocess.run(cmd, env=self.env(), stdout=subprocess.DEVNULL if self.a.mode == "smoke"
                           else sys.stderr)
        if r.returncode != 0:
            raise SystemExit(f"benches: hyperfine failed for {name}")
        with open(js) as f:
            data = json.load(f)
        os.unlink(js)
        stats = {}
        for label, res in zip(labels, data["results"]):
            stats[label] = dict(median=res["median"], min=res["min"], max=res["max"],
                                mean=res["mean"], user=res["user"], system=res["system"],
                                runs=len(res["times"]))
        return stats

    def peak_rss(self, prepare, command):
        """Max RSS (KiB) of one run of `command`, after `prepare`, by GNU time."""
        sh(prepare)
        f = os.path.join(self.work, "time.out")
        sh(f"/usr/bin/time -f '%M %e' -o {q(f)} bash -c {q(command)}", env=self.env())
        with open(f) as fh:
            rss, wall = fh.read().split()[-2:]
        return int(rss), float(wall)

    def check_install(self, w, expect_files, what):
        """The last timed run left its install: check file count, mode and owner."""
        n = int(out(f"find {q(w['dest'])} -type f | wc -l"))
        modes = out(f"find {q(w['dest'])} -type f -printf '%m %u\\n' | sort -u")
        dmodes = out(f"find {q(w['dest'])} -mindepth 1 -type d -printf '%m %u\\n' | sort -u")
        ok = (n == expect_files and modes == f"640 {self.owner}"
              and (dmodes == f"750 {self.owner}" or dmodes == ""))
        if not ok:
            raise SystemExit(f"benches: {what}: wrong install in {w['dest']}: {n} files "
                             f"(want {expect_files}), file modes {modes!r}, dir modes {dmodes!r}")

    def cell(self, group, workload, mode, store, kind, agent, baseline, target, runs,
             warmup=0, files=None, w=None):
        self.results["cells"].append(dict(group=group, workload=workload, mode=mode,
                                          store=store, kind=kind, agent=agent,
                                          baseline=baseline, target=target, runs=runs,
                                          warmup=warmup, files=files))

    # ---------------------------------------------------------------------------- workloads

    def space_check(self):
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
        large = self.m["large"]
        need = 3.3 * large + 2.5 * GIB if self.a.mode == "full" else large * 4 + 512 * MIB
        self.results["shm_free"] = free
        if free < need:
            if self.a.mode != "full" or free < 3 * GIB:
                raise SystemExit(f"benches: /dev/shm has {free / GIB:.1f} GiB free; this mode "
                                 f"needs about {need / GIB:.1f} GiB")
            new = int((free - 2.5 * GIB) / 3.3) // MIB * MIB
            self.results["notes"].append(
                f"/dev/shm had only {free / GIB:.1f} GiB free: the large-file workload was "
                f"reduced from {large / GIB:.1f} GiB to {new / GIB:.2f} GiB.")
            self.m["large"] = new
        log(f"/dev/shm: {free / GIB:.1f} GiB free")

    def small_files(self, base, store, nfiles, kinds, runs, redeploy=True):
        # Bundles are generated on tmpfs whatever the store (the root disk is slow for this).
        b = os.path.join(self.work, f"b{nfiles}-{store}")
        w = self.world(base, f"w{nfiles}")
        log(f"generating {nfiles} small files ({store})")
        self.gen("small", "--files", nfiles, "--dest", w["dest"], "--out", f"{b}/v1",
                 "--out2", f"{b}/v2")
        expect = nfiles + 2  # appspec.yml and scripts/hook.sh are installed too
        for kind in kinds:
            for v in ("v1", "v2"):
                self.archive(f"{b}/{v}", f"{b}/{v}.{kind}", kind)
        shutil.rmtree(f"{b}/v1")
        shutil.rmtree(f"{b}/v2")
        warm = 1 if nfiles <= 10_000 else 0
        label = f"{nfiles // 1000}k files" if nfiles >= 1000 else f"{nfiles} files"
        for kind in kinds:
            v1, v2 = f"{b}/v1.{kind}", f"{b}/v2.{kind}"
            st = self.hyperfine(
                f"{label} {kind} fresh ({store})",
                {"agent": self.agent_cmd(w, v1, kind), "baseline": self.baseline_cmd(w, v1, kind)},
                [self.reset_agent(w), self.reset_baseline(w)], runs, warm)
            self.check_install(w, expect, f"{label} {kind} fresh baseline")
            sh(self.reset_agent(w) + " && " + self.agent_cmd(w, v1, kind))
            self.check_install(w, expect, f"{label} {kind} fresh agent")
            self.cell("small", label, "fresh", store, kind, st["agent"], st["baseline"], 1.0,
                      runs, warm, nfiles)
            if not redeploy:
                continue
            st = self.hyperfine(
                f"{label} {kind} redeploy ({store})",
                {"agent": self.agent_cmd(w, v2, kind),
                 "baseline": f"rm -rf {q(w['stage'])} {q(w['dest'])} && mkdir {q(w['stage'])} "
                             f"{q(w['dest'])} && " + self.baseline_cmd(w, v2, kind)},
                [self.reset_agent(w) + " && " + self.agent_cmd(w, v1, kind),
                 self.reset_baseline(w) + " && " + self.baseline_cmd(w, v1, kind)],
                runs, warm)
            self.check_install(w, expect, f"{label} {kind} redeploy baseline")
            self.cell("small", label, "redeploy (10% changed)", store, kind, st["agent"],
                      st["baseline"], 1.0, runs, warm, nfiles)
        if store == "tmpfs" and nfiles == max(self.m["small"]):
            for kind in kinds:
                rss, wall = self.peak_rss(self.reset_agent(w),
                                          self.agent_cmd(w, f"{b}/v1.{kind}", kind))
                self.results["other"][f"rss_{kind}"] = dict(kib=rss, wall=wall, files=nfiles)
        if store == "tmpfs" and nfiles == min(self.m["small"]) and self.a.mode != "smoke":
            self.profile_syscalls(w, f"{b}/v1.tgz", label)
        shutil.rmtree(w["dir"])
        shutil.rmtree(b)

    def profile_syscalls(self, w, bundle, label):
        """strace -c -f of one agent run and one baseline run: where the system time goes."""
        if not shutil.which("strace"):
            self.results["notes"].append("strace not installed: no syscall profile.")
            return
        prof = {}
        for who, prep, cmd in (("agent", self.reset_agent(w), self.agent_cmd(w, bundle, "tgz")),
                               ("baseline", self.reset_baseline(w),
                                self.baseline_cmd(w, bundle, "tgz"))):
            sh(prep)
            f = os.path.join(self.work, "strace.out")
            sh(f"strace -f -c -o {q(f)} bash -c {q(cmd)}", env=self.env(),
               stdout=subprocess.DEVNULL)
            rows = []
            with open(f) as fh:
                for line in fh:
                    p = line.split()
                    if len(p) >= 5 and re.match(r"^[0-9.]+$", p[0]) and p[-1] != "total":
                        errors = p[4] if len(p) == 6 else ""
                        rows.append(dict(pct=float(p[0]), seconds=float(p[1]),
                                         calls=int(p[3]), errors=errors, name=p[-1]))
            rows.sort(key=lambda r: -r["calls"])
            prof[who] = dict(rows=rows[:12], calls=sum(r["calls"] for r in rows))
        self.results["profiles"]["strace"] = dict(workload=f"{label} tgz fresh", **prof)

    def large_files(self, base, runs):
        total = self.m["large"]
        b = os.path.join(base, "large")
        w = self.world(base, "wlarge")
        log(f"generating 4 large files, {total / MIB:.0f} MiB")
        self.gen("large", "--total", total, "--dest", w["dest"], "--out", f"{b}/v1")
        self.archive(f"{b}/v1", f"{b}/v1.tgz", "tgz", level=1)
        shutil.rmtree(f"{b}/v1")
        bundle = f"{b}/v1.tgz"
        st = self.hyperfine(
            f"large {total / MIB:.0f} MiB tgz fresh",
            {"agent": self.agent_cmd(w, bundle, "tgz"),
             "baseline": self.baseline_cmd(w, bundle, "tgz")},
            [self.reset_agent(w), self.reset_baseline(w)], runs, 0)
        self.check_install(w, 6, "large baseline")
        label = f"4 files, {total / GIB:.2f} GiB" if total >= GIB else f"4 files, {total // MIB} MiB"
        self.cell("large", label, "fresh", "tmpfs", "tgz", st["agent"], st["baseline"], 1.1,
                  runs, 0, 4)
        # The agent's install is checked on the run that measures its peak RSS.
        rss, wall = self.peak_rss(self.reset_agent(w), self.agent_cmd(w, bundle, "tgz"))
        self.check_install(w, 6, "large agent")
        self.results["other"]["rss_large"] = dict(kib=rss, wall=wall)
        shutil.rmtree(w["dir"])
        shutil.rmtree(b)

    def small_things(self, base):
        """--version, a one-file deployment, hook spawn overhead."""
        o = self.results["other"]
        st = self.hyperfine("--version", {"agent --version": f"{q(self.bin)} --version"}, [],
                            200 if self.a.mode != "smoke" else 5, 20 if self.a.mode != "smoke" else 1,
                            shell=False)
        o["version"] = st["agent --version"]
        runs = self.m["runs_small"] * 2 if self.a.mode != "smoke" else 2
        warm = 2 if self.a.mode != "smoke" else 0
        w = self.world(base, "wone")
        self.gen("one", "--size", 4096, "--dest", w["dest"], "--out", f"{base}/one")
        self.archive(f"{base}/one", f"{base}/one.tgz", "tgz")
        st = self.hyperfine("one-file deployment",
                            {"agent": self.agent_cmd(w, f"{base}/one.tgz", "tgz"),
                             "baseline": self.baseline_cmd(w, f"{base}/one.tgz", "tgz")},
                            [self.reset_agent(w), self.reset_baseline(w)], runs, warm)
        o["one_file"] = st
        rss, _ = self.peak_rss(self.reset_agent(w), self.agent_cmd(w, f"{base}/one.tgz", "tgz"))
        o["one_file_rss"] = rss
        # Hook spawn overhead: BeforeInstall with N trivial scripts vs none.
        n = self.m["hooks"]
        for k in (0, n):
            self.gen("hooks", "--hooks", k, "--dest", w["dest"], "--out", f"{base}/hooks{k}")
            self.archive(f"{base}/hooks{k}", f"{base}/hooks{k}.tgz", "tgz")
        scripts = f"{base}/hooks{n}/scripts"
        st = self.hyperfine(
            f"hooks 0 vs {n}",
            {"agent, 0 hooks": self.agent_cmd(w, f"{base}/hooks0.tgz", "tgz"),
             f"agent, {n} hooks": self.agent_cmd(w, f"{base}/hooks{n}.tgz", "tgz"),
             f"shell loop, {n} scripts": f"for f in {q(scripts)}/*.sh; do \"$f\" || exit 1; done"},
            [self.reset_agent(w), self.reset_agent(w), "true"], runs, warm)
        o["hooks"] = dict(n=n, stats=st)
        shutil.rmtree(w["dir"])

    def s3(self, base):
        size = self.m["s3"]
        w = self.world(base, "ws3")
        log(f"S3: one object of {size // MIB} MiB from moto_server")
        self.gen("one", "--size", size, "--dest", w["dest"], "--out", f"{base}/s3b")
        bundle = f"{base}/s3.tar"
        self.archive(f"{base}/s3b", bundle, "tar")
        shutil.rmtree(f"{base}/s3b")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = self.env()
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1")
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(moto)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("benches: moto_server did not start")
        up = (f"import boto3; c = boto3.client('s3', endpoint_url='{url}', "
              f"region_name='us-east-1', aws_access_key_id='testing', "
              f"aws_secret_access_key='testing'); c.create_bucket(Bucket='bench'); "
              f"c.upload_file('{bundle}', 'bench', 'bundle.tar', "
              f"Config=__import__('boto3.s3.transfer').s3.transfer.TransferConfig("
              f"multipart_threshold=8 << 30))")
        sh(f"{q(sys.executable)} -c {q(up)}", env=env)
        # curl fetches the same object through a presigned URL (moto refuses anonymous GETs).
        presign = (f"import boto3; c = boto3.client('s3', endpoint_url='{url}', "
                   f"region_name='us-east-1', aws_access_key_id='testing', "
                   f"aws_secret_access_key='testing'); print(c.generate_presigned_url("
                   f"'get_object', Params=dict(Bucket='bench', Key='bundle.tar'), "
                   f"ExpiresIn=7200))")
        signed_url = subprocess.run([sys.executable, "-c", presign], env=env, check=True,
                                    capture_output=True, text=True).stdout.strip()
        s3env = (f"AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 "
                 f"AWS_ENDPOINT_URL_S3={url} ")
        got = f"{w['dir']}/curl.out"
        st = self.hyperfine(
            "S3 download",
            {"agent from s3://": s3env + self.agent_cmd(w, "s3://bench/bundle.tar", "tar"),
             "agent from a local file": self.agent_cmd(w, bundle, "tar"),
             "curl": f"curl -sSf -o {q(got)} {q(signed_url)}",
             # The agent checks a single-part object's MD5 against its ETag after the download.
             "curl + md5sum": f"curl -sSf -o {q(got)} {q(signed_url)} && md5sum {q(got)} >/dev/null"},
            [self.reset_agent(w), self.reset_agent(w), f"rm -f {q(got)}", f"rm -f {q(got)}"],
            self.m["runs"] + 2, 1)
        if os.path.getsize(got) != os.path.getsize(bundle):
            raise SystemExit("benches: curl got a different size from moto")
        self.results["other"]["s3"] = dict(bytes=os.path.getsize(bundle), stats=st)
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(w["dir"])

    def daemon(self):
        log("daemon: idle RSS and CPU, then deployments (cargo test --test bench_daemon)")
        env = dict(os.environ)
        env.update(BENCH_AGENT_BIN=self.bin, BENCH_DEPLOYS=str(self.m["deploys"]),
                   BENCH_IDLE_SECONDS=str(self.m["idle"]))
        r = subprocess.run(["cargo", "test", "--locked", "--test", "bench_daemon", "--",
                            "--ignored", "--nocapture", "--test-threads", "1"],
                           cwd=REPO, env=env, capture_output=True, text=True)
        found = re.findall(r"BENCH_JSON (\{.*\})", r.stdout)
        if r.returncode != 0 or not found:
            sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
            raise SystemExit("benches: the daemon measurement failed")
        self.results["other"]["daemon"] = json.loads(found[-1])

    # ---------------------------------------------------------------------------- main

    def machine(self):
        cpu = out("grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-").strip()
        mem = out("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
        return dict(cpu=cpu, nproc=out("nproc"), kernel=platform.release(), mem=mem,
                    os=out(". /etc/os-release && echo $PRETTY_NAME"),
                    hyperfine=out("hyperfine --version"),
                    tar=out("tar --version | head -1"), gzip=out("gzip --version | head -1"),
                    unzip=out("unzip -v | head -1 | cut -c1-40"),
                    coreutils=out("cp --version | head -1"),
                    curl=out("curl --version | head -1 | cut -d' ' -f1-2"),
                    rustc=out("rustc --version"),
                    commit=out(f"git -C {q(REPO)} rev-parse --short HEAD"),
                    dirty=bool(out(f"git -C {q(REPO)} status --porcelain --untracked-files=no")),
                    binary=self.bin, binary_size=os.path.getsize(self.bin),
                    binary_file=out(f"file -b {q(self.bin)}"),
                    musl="musl" in self.bin)

    def loadavg(self):
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])

    def save(self):
        """The raw figures so far (also after a failure: `benches/run --render` shows them)."""
        path = self.a.out + ".json" if self.a.json is None else self.a.json
        with open(path, "w") as f:
            json.dump(self.results, f, indent=1)

    def part(self, name, fn, *args):
        fn(*args)
        self.results.setdefault("parts", []).append(name)
        self.results["elapsed"] = time.time() - self.t0
        self.results["load_end"] = self.loadavg()
        self.save()

    def run(self):
        m = self.m
        self.space_check()
        self.results["started"] = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
        self.results["load_start"] = self.loadavg()
        self.results["machine"] = self.machine()
        self.work = self.mkwork("/dev/shm", "shm")
        self.t0 = time.time()
        only = set(self.a.only.split(",")) if self.a.only else None
        want = lambda part: only is None or part in only  # noqa: E731
        if want("misc"):
            self.part("misc", self.small_things, self.work)
        if want("small"):
            for n in m["small"]:
                self.part(f"small {n}", self.small_files, self.work, "tmpfs", n, ["tgz", "zip"],
                          m["runs"] if n > 10_000 or self.a.mode == "smoke" else m["runs_small"])
        if want("large"):
            self.part("large", self.large_files, self.work, m["runs"])
        if m["s3"] and not self.a.no_s3 and want("s3"):
            self.part("s3", self.s3, self.work)
        if m["deploys"] and not self.a.no_daemon and want("daemon"):
            self.part("daemon", self.daemon)
        if m["disk"] and not self.a.no_disk and want("disk"):
            disk = self.mkwork(self.a.disk_dir, "disk")
            self.part("disk", self.small_files, disk, "disk", m["disk"], ["tgz"],
                      m["disk_runs"], False)
        self.results["elapsed"] = time.time() - self.t0
        self.results["load_end"] = self.loadavg()
        sys.path.insert(0, HERE)
        import render
        text = render.render(self.results, os.path.join(HERE, "notes.md"))
        with open(self.a.out, "w") as f:
            f.write(text)
        self.save()
        log(f"wrote {self.a.out} in {self.results['elapsed'] / 60:.1f} min")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin", help="the codedeploy-agent binary to measure")
    p.add_argument("--mode", choices=list(MODES), default="full")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    p.add_argument("--json", help="raw figures (default: next to --out, .json added)")
    p.add_argument("--disk-dir", default="/var/tmp")
    p.add_argument("--no-disk", action="store_true")
    p.add_argument("--no-s3", action="store_true")
    p.add_argument("--no-daemon", action="store_true")
    p.add_argument("--only", help="comma-separated parts: misc,small,large,s3,daemon,disk "
                   "(development; the document then lacks the others)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--render", metavar="JSON",
                   help="only render --out from the raw figures of an earlier run")
    a = p.parse_args()
    if a.render:
        sys.path.insert(0, HERE)
        import render
        with open(a.render) as f:
            results = json.load(f)
        with open(a.out, "w") as f:
            f.write(render.render(results, os.path.join(HERE, "notes.md")))
        return
    if not a.bin:
        p.error("--bin is required")
    b = Bench(a)

    def stop(signum, _frame):
        raise SystemExit(f"benches: interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        b.run()
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
