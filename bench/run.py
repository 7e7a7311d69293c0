#!/usr/bin/env python3
"""bench/run.py — ferry's whole performance table in one command (issue 8).

  python3 bench/run.py                  # everything, 3 reps: the table for docs/PERFORMANCE.md
  python3 bench/run.py --quick          # small sizes, 1 rep: a few minutes, to test the suite
  python3 bench/run.py --only scale,local --reps 5

Sections (all against the same data, ratios vs the peers):
  peers     AzCopy, rclone and ferry on one Azurite, through the shared harness's peers.sh
            (many-small: upload s2s download incr-noop incr-1pct; few-large: upload s2s
            download), plus Azurite's own ceiling (azprobe.py put) for small uploads.
  local     local -> local: cp -r, rclone copy, ferry (bench/local.py), log writer share.
  scale     incremental no-op over trees of empty files (10k, 100k, 1M): wall, RSS, µs/blob;
            then verify-log, events, history --limit and history (every line) read the last
            log back (wall, RSS).
  parallel  small-file upload with ferry --parallel 8,16,32,64 and auto.

Writes OUT (default bench/results/latest.md) and, next to it, OUT.json (every measurement),
OUT-peers.tsv (peers.sh rows) and OUT-logs/ (tool output). Exit status: 0 when every run
succeeded and verified (targets missed are reported, not failures), 1 when any tool run
failed or a copy did not verify (the table is still written, with the failures on top),
2 for bad arguments or a missing prerequisite.

Python 3 standard library only; the peers section needs the harness (AzCopy, rclone,
Azurite, azure-storage-blob: its setup.sh installs them).
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import local as localbench  # noqa: E402

SECTIONS = ["peers", "local", "scale", "parallel"]
FULL = {"small": 10000, "large": (2, 256), "scale": [10_000, 100_000, 1_000_000], "reps": 3}
QUICK = {"small": 1000, "large": (2, 16), "scale": [1_000, 10_000, 100_000], "reps": 1}
PARALLEL = ["8", "16", "32", "64", "auto"]
# The --parallel section's verdict compares medians within 10%, and on Azurite
# every value from 8 to 64 lies within ~5% of the others while one run of
# one value moves 10% from run to run: one sample each made the verdict a
# coin toss (1.01-1.13 over six `--reps 1` runs). So at least this many.
PARALLEL_MIN_REPS = 3
MODIFY_PCT = 1
TOOLS = ["azcopy", "rclone", "ferry"]
# peers.sh names ferry "ours"; the order is rotated per rep (see peers()).
PEER_TOOLS = ["azcopy", "rclone", "ours"]
NAMES = {"azcopy": "AzCopy", "rclone": "rclone", "ferry": "ferry"}
PEER_SCENARIOS = {
    "many-small": ["upload", "s2s", "download", "incr-noop", "incr-1pct"],
    "few-large": ["upload", "s2s", "download"],
}


def rotated(seq, rep):
    """`seq` started at its `rep`-th item (wrapping): rep by rep, each item runs first once."""
    k = rep % len(seq)
    return seq[k:] + seq[:k]


class BenchError(Exception):
    """A run failed or did not verify: reported on top of the table, exit status 1."""


class Setup(Exception):
    """A prerequisite is missing: one line, exit status 2."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2, dash="-"):
    if x is None:
        return dash
    if isinstance(x, str):
        return x
    return f"{x:,.{nd}f}"


def ratio(a, b, nd=2):
    return fmt(a / b, nd) if a is not None and b else "-"


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run(cmd, env=None, timeout=None, out_lines=False):
    """Run cmd (no shell) -> dict(rc, wall, cpu, rss_mib, out, err): wall and CPU from wait4,
    with out_lines only the number of lines it printed, as `out_lines` (a million-line listing
    is not read into this process);
    peak RSS from GNU time when present. (A child's ru_maxrss starts at its parent's RSS when
    it forked, so wait4 alone reports at least this script's own RSS, ~60 MiB after the 1M
    tree scan.)"""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, \
            tempfile.NamedTemporaryFile(mode="r") as ft:
        full = [GNU_TIME, "-f", "%M", "-o", ft.name, *cmd] if GNU_TIME else cmd
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
        expired = []
        timer = None
        if timeout:
            def kill():
                expired.append(True)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            timer = threading.Timer(timeout, kill)
            timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            os.killpg(p.pid, signal.SIGTERM)
            raise
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        rss_kib = ru.ru_maxrss
        if GNU_TIME:
            ft.seek(0)
            lines = [l for l in ft.read().split() if l.isdigit()]
            if lines:
                rss_kib = int(lines[-1])
        r = {"cmd": cmd, "rc": p.returncode, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
             "rss_mib": rss_kib / 1024, "err": fe.read().decode(errors="replace")}
        if out_lines:
            r["out"] = ""
            r["out_lines"] = sum(block.count(b"\n") for block in iter(lambda: fo.read(1 << 20), b""))
        else:
            r["out"] = fo.read().decode(errors="replace")
        if expired:
            raise BenchError(f"{shlex.join(cmd[:3])} ... timed out after {timeout}s")
        return r


def check(r, what):
    if r["rc"] != 0:
        tail = (r["err"].strip() or r["out"].strip())[-500:]
        raise BenchError(f"{what} failed (exit {r['rc']}): {tail}")
    return r


class Ctx:
    """Everything the sections share: options, paths, tool environment, results."""

    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.sizes = QUICK if a.quick else FULL
        self.reps = a.reps or self.sizes["reps"]
        self.ferry = a.ferry
        # The unlogged-outcomes build for the local section (None: not measured, see unlogged_note).
        self.unlogged = None
        self.unlogged_note = None
        self.harness = a.harness
        self.scratch = a.scratch
        self.out = a.out
        stem = a.out[:-3] if a.out.endswith(".md") else a.out
        self.json_path = stem + ".json"
        self.tsv_path = stem + "-peers.tsv"
        self.logs = stem + "-logs"
        self.env = None          # environment from the harness's env.sh
        self.azurite_started = False
        self.azurite_pid = None
        self.errors = []         # (section, message)
        self.results = {}        # section -> dict
        self.timing = {}         # section -> seconds
        self.draw_failed = False

    # ---- harness ----------------------------------------------------------------------
    def harness_env(self):
        if self.env is not None:
            return self.env
        if not os.path.isfile(os.path.join(self.harness, "peers.sh")):
            raise Setup(f"bench harness not found at {self.harness} (no peers.sh there): pass --harness DIR")
        env = dict(os.environ)
        p = subprocess.run(["bash", "-c", '. "$1/env.sh" >/dev/null && env -0', "_", self.harness],
                           capture_output=True, env=env)
        if p.returncode != 0:
            raise Setup(f"{self.harness}/env.sh failed ({p.stderr.decode().strip()}): run {self.harness}/setup.sh")
        self.env = dict(kv.split("=", 1) for kv in p.stdout.decode().split("\0") if "=" in kv)
        return self.env

    def need_peers(self):
        env = self.harness_env()
        az = env.get("AZCOPY_BIN", "")
        if not az or not os.access(az, os.X_OK):
            raise Setup(f"AzCopy not found (env.sh found no azcopy binary): run {self.harness}/setup.sh")
        for tool, hint in (("rclone", "rclone"), ("azurite-blob", "Azurite")):
            if not shutil.which(tool, path=env.get("PATH")):
                raise Setup(f"{hint} not found ({tool} not on PATH): run {self.harness}/setup.sh")
        if not os.access("/usr/bin/time", os.X_OK):
            raise Setup(f"/usr/bin/time not found: run {self.harness}/setup.sh")

    def azurite(self):
        """Start the harness's Azurite unless one is running; every Azure section uses it."""
        if self.azurite_pid:
            return self.azurite_pid
        env = self.harness_env()
        sh = os.path.join(self.harness, "azurite.sh")
        port, d = env["AZ_PORT"], env["AZURITE_DIR"]
        p = subprocess.run([sh, "status", port, d], capture_output=True, text=True, env=env)
        if p.returncode == 0:
            self.azurite_pid = int(p.stdout.split()[0])
            log(f"Azurite already running: pid {self.azurite_pid}, port {port}")
        else:
            p = subprocess.run([sh, "start", port, d], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise Setup(f"could not start Azurite ({sh} start {port} {d}): {p.stderr.strip()}")
            self.azurite_pid = int(p.stdout.split()[-1])
            self.azurite_started = True
            log(f"started Azurite: pid {self.azurite_pid}, port {port}, workspace {d}")
        # as peers.sh does: every Azurite thread at BENCH_NICE, so all Azure sections see the same Azurite
        try:
            for tid in os.listdir(f"/proc/{self.azurite_pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), self.nice())
        except OSError:
            pass
        return self.azurite_pid

    def wait_azurite_idle(self, quiet=0.05, limit=60.0):
        """Wait (at most `limit` s) for a second in which Azurite uses under `quiet` of a core.

        Deleting a container of 10,000 blobs leaves Azurite collecting them in the background;
        a run started meanwhile shares the CPU with that and reads slow. -> seconds waited."""
        pid = self.azurite_pid
        if not pid:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / tick

        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < limit:
                a = cpu()
                time.sleep(1.0)
                if cpu() - a < quiet:
                    break
        except OSError:
            pass
        return time.monotonic() - t0

    def nice(self):
        """peers.sh's BENCH_NICE: -10 as root (shields the measurement from other load), else 0."""
        return int(self.harness_env().get("BENCH_NICE") or (-10 if os.geteuid() == 0 else 0))

    def stop_azurite(self):
        if self.azurite_started:
            env = self.harness_env()
            subprocess.run([os.path.join(self.harness, "azurite.sh"), "stop", env["AZ_PORT"], env["AZURITE_DIR"]],
                           capture_output=True, env=env)
            self.azurite_started = False
            log("stopped Azurite")

    def dataset_dir(self, dataset, count=None, size=None):
        """The local copy of a peers.sh dataset (same name peers.sh gives it), made if missing."""
        env = self.harness_env()
        tag = dataset + (f"-n{count}" if count else "") + (f"-s{size}" if size else "")
        d = os.path.join(env["BENCH_SCRATCH"], "data", tag)
        args = ["python3", os.path.join(self.harness, "mkdata.py"), dataset, "--local", d, "--quiet"]
        if count:
            args += ["--count", str(count)]
        if size:
            args += ["--size", size]
        check(run(args, env=env, timeout=1800), f"mkdata.py {dataset}")
        return d

    # ---- Azure REST (stdlib; account SAS from env.sh) ---------------------------------
    def az(self, method, path, query):
        env = self.harness_env()
        url = f"{env['AZ_ENDPOINT']}/{path}?{query}&{env['AZ_SAS']}"
        req = urllib.request.Request(url, method=method, headers={"x-ms-version": "2021-08-06"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def mkcontainer(self, name):
        st, body = self.az("PUT", name, "restype=container")
        if st not in (201, 409):
            raise BenchError(f"create container {name}: HTTP {st} {body[:200]!r}")

    def rmcontainer(self, name):
        self.az("DELETE", name, "restype=container")

    def list_blobs(self, name):
        out, marker = {}, ""
        while True:
            q = "restype=container&comp=list&maxresults=5000" + (f"&marker={urllib.parse.quote(marker)}" if marker else "")
            st, body = self.az("GET", name, q)
            if st != 200:
                raise BenchError(f"list container {name}: HTTP {st} {body[:200]!r}")
            root = ET.fromstring(body)
            for b in root.iter("Blob"):
                out[b.findtext("Name")] = int(b.findtext("Properties/Content-Length"))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return out

    def ferry_ver(self):
        r = run([self.ferry, "--version"], timeout=30)
        return r["out"].strip() if r["rc"] == 0 else f"(ferry --version failed: exit {r['rc']})"


# ======================================================================== header
def header(ctx):
    def sh(cmd, env=None):
        try:
            p = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, timeout=60)
            return (p.stdout.strip() or p.stderr.strip()).splitlines()[0] if p.returncode == 0 else "not found"
        except (subprocess.SubprocessError, IndexError):
            return "not found"

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    env = None
    try:
        env = ctx.harness_env()
    except Setup:
        pass
    az = (env or {}).get("AZCOPY_BIN") or "azcopy"
    commit = sh(f"git -C {shlex.quote(REPO)} rev-parse --short HEAD")
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    st = os.stat(ctx.ferry)
    busy = subprocess.run(["pgrep", "-f", "cargo |rustc "], capture_output=True, text=True).stdout.split()
    h = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "ram": mem, "kernel": platform.release(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "builds_running_at_start": len(busy),
        "ferry": ctx.ferry_ver(), "ferry_binary": ctx.ferry,
        "ferry_built": datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "azcopy": sh(f"{shlex.quote(az)} --version", env), "rclone": sh("rclone version"),
        "azurite": sh("azurite-blob --version"), "python": platform.python_version(),
        "cp": sh("cp --version"),
        "git_commit": commit + (" (uncommitted changes in tracked files)" if dirty else ""),
        "mode": "quick" if ctx.quick else "full", "reps": ctx.reps, "sections": ctx.a.only,
    }
    return h


def header_md(h):
    busy = ""
    if h["builds_running_at_start"]:
        busy = (f"\n\n**Not a quiet machine:** {h['builds_running_at_start']} cargo/rustc processes were running "
                f"when the run started (load {' '.join(h['loadavg_at_start'])}); read the numbers as ranges.")
    quick = ("\n\n**Quick mode** (`--quick`): small sizes, so the targets' verdicts are only indicative."
             if h["mode"] == "quick" else "")
    return f"""# ferry performance table

Produced by `python3 bench/run.py{' --quick' if h['mode'] == 'quick' else ''}` on {h['date_utc']}.

| what | value |
|---|---|
| machine | {h['nproc']} CPUs ({h['cpu']}), {h['ram']} RAM, Linux {h['kernel']} |
| load at start | {' '.join(h['loadavg_at_start'])} |
| ferry | {h['ferry']} (`{h['ferry_binary']}`, built {h['ferry_built']}) at git {h['git_commit']} |
| AzCopy | {h['azcopy']} |
| rclone | {h['rclone']} |
| Azurite | {h['azurite']} |
| cp | {h['cp']} |
| runs | mode {h['mode']}, {h['reps']} rep(s) per measurement (medians), sections {h['sections']} |{busy}{quick}
"""


# ======================================================================== peers
def peers(ctx):
    ctx.need_peers()
    env = dict(ctx.harness_env())
    ctx.azurite()
    small = ctx.sizes["small"]
    lcount, lmib = ctx.sizes["large"]
    datasets = [
        ("many-small", ["--dataset", "many-small"] + (["--count", str(small)] if small != 10000 else []), small),
        ("few-large", ["--dataset", "few-large", "--count", str(lcount), "--size", f"{lmib}M"], lcount),
    ]
    if os.path.exists(ctx.tsv_path):
        os.remove(ctx.tsv_path)
    F = shlex.quote(ctx.ferry)
    rows = []      # one per tool run
    probes = []    # azprobe put results
    res = ctx.results["peers"] = {"rows": rows, "probes": probes, "small": small, "large": [lcount, lmib]}
    failed = []
    for rep in range(ctx.reps):
        for ds, args, nfiles in datasets:
            if ds == "many-small":
                probes.append(azprobe(ctx, env, small))
            state = os.path.join(ctx.scratch, "peers-state", f"{ds}-rep{rep + 1}")
            shutil.rmtree(state, ignore_errors=True)
            S = shlex.quote(state)
            e = dict(env)
            e.update({
                "OURS_BIN_NAME": "ferry",
                "OURS_UPLOAD": f"{F} copy --state {S} --quiet {{src}} {{dst}}",
                "OURS_DOWNLOAD": f"{F} copy --state {S} --quiet {{src}} {{dst}}",
                "OURS_S2S": f"{F} copy --state {S} --quiet {{src_csas}} {{dst_csas}}",
                "OURS_SYNC": f"{F} copy --state {S} {{src}} {{dst}} --mode incremental",
                "OURS_TRANSFERRED_REGEX": r"copied ([0-9]+) files",
            })
            scen = PEER_SCENARIOS[ds]
            # Each rep starts with another tool: Azurite slows as its workspace
            # fills (the same 512 MiB upload: 3.5 s fresh, 6.4-7.1 s after 15 others),
            # so a fixed order always hands the last tool the fullest Azurite.
            order = ",".join(rotated(PEER_TOOLS, rep))
            cmd = [os.path.join(ctx.harness, "peers.sh"), *args, "--tools", order,
                   "--scenarios", " ".join(scen), "--modify-pct", str(MODIFY_PCT), "--results", ctx.tsv_path]
            logf = os.path.join(ctx.logs, f"peers-{ds}-rep{rep + 1}.log")
            log(f"peers rep {rep + 1}/{ctx.reps} {ds}: peers.sh (log {logf})")
            rc, out = run_streaming(cmd, e, logf, timeout=4 * 3600)
            m = re.search(r"^== run (\S+):", out, re.M)
            if not m:
                failed.append(f"peers.sh {ds} exited {rc} before starting a run; see {logf}")
                continue
            run_id = m[1]
            got = read_tsv(ctx.tsv_path, run_id)
            run_dir = os.path.join(env["BENCH_SCRATCH"], "runs", run_id)
            problems = []
            if rc != 0:
                problems.append(f"peers.sh exited {rc}")
            for tool in TOOLS:
                for sc in scen:
                    label = sc + "(up)" if sc.startswith("incr") else sc
                    r = next((x for x in got if x["tool"] == tool and x["scenario"] == label), None)
                    if r is None:
                        problems.append(f"{tool} {label}: no row (skipped?)")
                        continue
                    cpu = time_file_cpu(os.path.join(run_dir, f"{'ours' if tool == 'ferry' else tool}-{sc}.time"))
                    row = {"rep": rep + 1, "dataset": ds, "tool": tool, "scenario": sc, "run": run_id,
                           "files": int(r["files"]), "bytes": int(r["bytes"]), "wall": float(r["seconds"]),
                           "cpu_s": cpu, "rss_mib": num(r["peak_rss_mib"]), "cpu_pct": num(r["tool_cpu_pct"]),
                           "azurite_cpu_pct": num(r["azurite_cpu_pct"]), "other_cpu_pct": num(r["other_cpu_pct"]),
                           "copied": r["transferred"], "rc": r["rc"], "verified": r["verified"],
                           "verify": r["verify_summary"]}
                    rows.append(row)
                    if r["rc"] != "0":
                        problems.append(f"{tool} {label}: exit {r['rc']}")
                    if r["verified"] != "yes":
                        problems.append(f"{tool} {label}: verify {r['verified']}: {r['verify_summary']}")
                    if tool == "ferry" and sc.startswith("incr"):
                        want = 0 if sc == "incr-noop" else max(1, round(nfiles * MODIFY_PCT / 100))
                        row["copied_expected"] = want
                        if r["transferred"] != str(want):
                            problems.append(f"ferry {label}: copied {r['transferred']}, expected exactly {want}")
            if problems:
                failed.append(f"{ds} rep {rep + 1} (run {run_id}, logs {run_dir}): " + "; ".join(problems))
        if failed:   # finish the rep's datasets, then stop: more reps would fail the same way
            raise BenchError("peers " + " | ".join(failed))
    return res


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def run_streaming(cmd, env, logf, timeout):
    """Run cmd, copy its output to logf and (indented) to stderr; -> (rc, output)."""
    os.makedirs(os.path.dirname(logf), exist_ok=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, text=True, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGTERM))
    timer.start()
    lines = []
    try:
        with open(logf, "w") as f:
            for line in p.stdout:
                lines.append(line)
                f.write(line)
                if line.strip():
                    print("    " + line.rstrip()[:220], file=sys.stderr, flush=True)
        rc = p.wait()
    except BaseException:
        os.killpg(p.pid, signal.SIGTERM)
        raise
    finally:
        timer.cancel()
    return rc, "".join(lines)


def read_tsv(path, run_id):
    import csv
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["run"] == run_id]


def time_file_cpu(path):
    """User + system seconds from a GNU `time -v` output file."""
    try:
        t = open(path).read()
    except OSError:
        return None
    u = re.search(r"User time \(seconds\): ([\d.]+)", t)
    s = re.search(r"System time \(seconds\): ([\d.]+)", t)
    return float(u[1]) + float(s[1]) if u and s else None


def azprobe(ctx, env, count):
    cmd = ["python3", os.path.join(ctx.harness, "azprobe.py"), "put", "--count", str(count), "--size", "4K"]
    log(f"azprobe put {count} x 4 KiB (Azurite's ceiling)")
    r = check(run(cmd, env=env, timeout=1800), "azprobe.py put")
    text = r["out"] + r["err"]
    m = re.search(r"([\d.]+)s, (\d+) req/s", text)
    if not m:
        raise BenchError(f"azprobe.py printed no req/s: {text.strip()[-300:]}")
    log("    " + text.strip().splitlines()[-1])
    return {"wall": float(m[1]), "req_per_s": float(m[2]), "line": text.strip().splitlines()[-1]}


def peers_agg(res):
    agg = {}
    for r in res["rows"]:
        agg.setdefault((r["dataset"], r["scenario"], r["tool"]), []).append(r)
    out = {}
    for k, rs in agg.items():
        w = median([r["wall"] for r in rs])
        out[k] = {"wall": w, "cpu_s": median([r["cpu_s"] for r in rs]), "rss": median([r["rss_mib"] for r in rs]),
                  "mibs": rs[0]["bytes"] / 2**20 / w if w else None, "files_s": rs[0]["files"] / w if w else None,
                  "copied": "/".join(dict.fromkeys(r["copied"] for r in rs)),
                  "other": max((r["other_cpu_pct"] or 0) for r in rs), "n": len(rs),
                  "bad": any(r["rc"] != "0" or r["verified"] != "yes" or
                             ("copied_expected" in r and r["copied"] != str(r["copied_expected"])) for r in rs)}
    return out


def peers_md(res):
    agg = peers_agg(res)
    small, (lc, lm) = res["small"], res["large"]
    lines = ["## 1. Against AzCopy and rclone on one Azurite (`peers.sh`)", "",
             "ferry hooked in with `OURS_UPLOAD`/`OURS_DOWNLOAD`=`ferry copy --state STATE --quiet {src} {dst}`, "
             "`OURS_S2S`=`ferry copy --state STATE --quiet {src_csas} {dst_csas}` (container SAS: Azurite's account "
             "SAS lacks Put Block From URL), `OURS_SYNC`=`ferry copy --state STATE {src} {dst} --mode incremental`; "
             "a fresh STATE per peers.sh run (ferry's `--quiet` runs print no count, so \"copied\" shows `-`). Every "
             "row verified by `verify.py` (content MD5s). Tool order rotates per rep (rep 1 AzCopy first, rep 2 rclone, rep 3 "
             "ferry): one Azurite serves every run and slows as it fills. CPU s = user + system of the tool (GNU time); \"other\" = host CPU% used by neither the tool nor Azurite (max over reps: "
             "high means a noisy measurement).", ""]
    for ds, title in (("many-small", f"many-small = {small:,} x 4 KiB"), ("few-large", f"few-large = {lc} x {lm} MiB")):
        scen = PEER_SCENARIOS[ds]
        if not any((ds, s, "ferry") in agg for s in scen):
            continue
        big = ds == "few-large"
        head = ("| scenario | AzCopy s | rclone s | ferry s | ferry / AzCopy | ferry / rclone | AzCopy CPU s | rclone CPU s "
                "| ferry CPU s | ferry CPU / AzCopy CPU |" + (" MiB/s AzCopy / rclone / ferry |" if big else "")
                + " RSS MiB AzCopy / rclone / ferry | copied AzCopy / rclone / ferry | other CPU% |")
        lines += [f"{title}:", "", head, "|---" * (head.count("|") - 1) + "|"]
        for sc in scen:
            g = {t: agg.get((ds, sc, t)) for t in TOOLS}
            if not all(g.values()):
                continue
            a, rc, f = g["azcopy"], g["rclone"], g["ferry"]
            name = sc + (f" ({MODIFY_PCT}% rewritten)" if sc == "incr-1pct" else "")
            bad = [NAMES[t] for t in TOOLS if g[t]["bad"]]
            if bad:
                name += f" **FAILED: {', '.join(bad)}** (see above)"
            lines.append(
                f"| {name} | {fmt(a['wall'])} | {fmt(rc['wall'])} | **{fmt(f['wall'])}** | {ratio(f['wall'], a['wall'])} "
                f"| {ratio(f['wall'], rc['wall'])} | {fmt(a['cpu_s'])} | {fmt(rc['cpu_s'])} | {fmt(f['cpu_s'])} "
                f"| {ratio(f['cpu_s'], a['cpu_s'])} |"
                + (f" {fmt(a['mibs'], 0)} / {fmt(rc['mibs'], 0)} / **{fmt(f['mibs'], 0)}** |" if big else "")
                + f" {fmt(a['rss'], 0)} / {fmt(rc['rss'], 0)} / {fmt(f['rss'], 0)} "
                f"| {a['copied']} / {rc['copied']} / {f['copied']} | {max(a['other'], rc['other'], f['other']):.0f} |")
        lines.append("")
    pr = median([p["req_per_s"] for p in res["probes"]])
    up = agg.get(("many-small", "upload", "ferry"))
    if pr and up:
        lines += ["Azurite's ceiling for small uploads (`azprobe.py put`, raw REST Put Blob from 2 processes x 16 threads, "
                  "run before each many-small round):", "",
                  "| azprobe put req/s | ferry upload files/s | ferry as % of the ceiling (target >= 85%) |", "|---|---|---|",
                  f"| {fmt(pr, 0)} ({' / '.join(fmt(p['req_per_s'], 0) for p in res['probes'])}) | {fmt(up['files_s'], 0)} "
                  f"| {100 * up['files_s'] / pr:.0f}% |", ""]
    return "\n".join(lines)


# ======================================================================== local
def local(ctx):
    lc, lm = ctx.sizes["large"]
    try:
        res = localbench.bench(ctx.ferry, os.path.join(ctx.scratch, "local"), ctx.reps, ctx.sizes["small"], lc, lm,
                               log=lambda m: log(m), unlogged=ctx.unlogged)
        res["unlogged_note"] = ctx.unlogged_note
        return res
    except localbench.LocalBenchError as e:
        raise BenchError(str(e))


def local_md(res):
    unlogged = ("The last column times ferry against a build with `--features unlogged-outcomes` (blob outcomes "
                "dropped before the log), run next to it in each rep, first every other rep: what logging "
                "outcomes costs the copy (the geometric mean of the two orders' medians: the first of the two is "
                "often slower on this disk)." if not res.get("unlogged_note") else
                f"What logging outcomes costs was not measured: {res['unlogged_note']}.")
    return "\n".join(["## 2. Local -> local (`bench/local.py`: cp -r, rclone copy, ferry copy --stats)", "",
                      "Each tool copies into a fresh folder, reps interleaved, the source read into the page cache before each run (rclone evicts what it reads, which slowed whichever tool ran next); medians. Copies are checked (names, "
                      "sizes; bytes on the first rep). Writer columns come from ferry's `log writer:` line (targets: "
                      "ferry / cp <= 1.5 on small files, writer busy <= 10% of wall). " + unlogged, "",
                      localbench.markdown(res), ""])


def build_unlogged(ctx):
    """Resolves --unlogged: a path, `none`, or `build` (cargo, into target/unlogged: ~8 min cold on 2 cores)."""
    want = ctx.a.unlogged
    if want == "none":
        ctx.unlogged_note = "--unlogged none"
        return
    if want != "build":
        ctx.unlogged = want
        return
    target = os.path.join(REPO, "target", "unlogged")
    log(f"building the unlogged-outcomes bench build into {target} (the first time takes minutes)")
    r = run(["cargo", "build", "--release", "--manifest-path", os.path.join(REPO, "Cargo.toml"), "-p", "ferry",
             "--features", "unlogged-outcomes", "--target-dir", target],
            timeout=3600)
    binary = os.path.join(target, "release", "ferry")
    if r["rc"] != 0 or not os.access(binary, os.X_OK):
        ctx.unlogged_note = "its build failed: " + (r["err"].strip().splitlines() or ["?"])[-1][:200]
        log(f"warning: {ctx.unlogged_note}")
        return
    ctx.unlogged = binary


# ======================================================================== scale
def make_tree(root, n):
    """N empty files in folders of 1,000 under root/src, and root/dst = `cp -al src dst`; cached."""
    ready = os.path.join(root, "ready")
    try:
        if open(ready).read().strip() == str(n):
            return False
    except OSError:
        pass
    log(f"scale: generating {n:,} empty files under {root} (cached for later runs)")
    shutil.rmtree(root, ignore_errors=True)
    src = os.path.join(root, "src")
    os.makedirs(src)
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    for i in range(n):
        if i % 1000 == 0:
            d = os.path.join(src, f"d{i // 1000:04d}")
            os.mkdir(d)
        os.close(os.open(os.path.join(d, f"f{i % 1000:04d}"), flags, 0o644))
    check(run(["cp", "-al", src, os.path.join(root, "dst")], timeout=3600), "cp -al")
    with open(ready, "w") as f:
        f.write(str(n))
    return True


def scale(ctx):
    rows = []
    ctx.results["scale"] = {"rows": rows}
    for n in ctx.sizes["scale"]:
        root = os.path.join(ctx.scratch, "scale", str(n))
        t0 = time.perf_counter()
        made = make_tree(root, n)
        gen = time.perf_counter() - t0 if made else None
        runs = []
        for rep in range(ctx.reps):
            state = os.path.join(ctx.scratch, "scale", f"state-{n}")
            shutil.rmtree(state, ignore_errors=True)
            r = check(run([ctx.ferry, "copy", os.path.join(root, "src"), os.path.join(root, "dst"), "--state", state,
                           "--quiet", "--stats"], timeout=3600), f"ferry no-op over {n:,} blobs")
            job = last_job(ctx, state)
            t = job_totals(job)
            if (t["skipped"], t["copied"], t["failed"]) != (n, 0, 0):
                raise BenchError(f"scale {n:,}: expected {n} skipped, 0 copied, 0 failed; the job says {t}")
            w = localbench.WRITER_RE.search(r["err"] + r["out"])
            runs.append({"wall": r["wall"], "cpu": r["cpu"], "rss_mib": r["rss_mib"],
                         "writer_busy_share": float(w["busy"]) / float(w["wall"]) if w else None,
                         "writer_line": next((l for l in r["err"].splitlines() if l.startswith("log writer:")), None)})
            if rep == ctx.reps - 1:
                audit_log(ctx, state, n, runs[-1])
            shutil.rmtree(state, ignore_errors=True)
            log(f"scale {n:,} rep {rep + 1}/{ctx.reps}: {r['wall']:.3f}s, {r['rss_mib']:.1f} MiB, cpu {r['cpu']:.2f}s")
        rows.append({"blobs": n, "generated_s": gen, "runs": runs, "audit": runs[-1].get("audit"),
                     "wall": median([x["wall"] for x in runs]),
                     "cpu": median([x["cpu"] for x in runs]), "rss_mib": median([x["rss_mib"] for x in runs]),
                     "rss_max": max(x["rss_mib"] for x in runs),
                     "writer_busy_share": median([x["writer_busy_share"] for x in runs])})
    return {"rows": rows}


def audit_log(ctx, state, n, into):
    """Reads back the whole log of the no-op just run: `verify-log` (every event against every stored
    entry and line), `events --kind JobFinished` (every chunk decoded, one line printed) and
    `history SRC --limit 10` (every line of the job scanned, the newest 10 kept) and `history SRC`
    (every line printed, newest first: sorted in temp files past 32k lines). All must stay flat in
    memory, like the run itself."""
    v = check(run([ctx.ferry, "--state", state, "verify-log"], timeout=3600), "ferry verify-log")
    if f"{n} checkpoint entries match" not in v["out"] + v["err"]:
        raise BenchError(f"scale {n:,}: verify-log did not check {n} entries: {(v['out'] + v['err'])[:300]}")
    e = check(run([ctx.ferry, "--state", state, "events", "--kind", "JobFinished"], timeout=3600),
              "ferry events --kind JobFinished")
    if e["out"].count("JobFinished") != 1:
        raise BenchError(f"scale {n:,}: events --kind JobFinished printed {e['out'][:300]!r}")
    src = os.path.join(ctx.scratch, "scale", str(n), "src")
    h = check(run([ctx.ferry, "--state", state, "history", src, "--limit", "10"], timeout=3600),
              "ferry history SRC --limit 10")
    if h["out"].count("skipped (not-newer)") != min(10, n):
        raise BenchError(f"scale {n:,}: history --limit 10 printed {h['out'][:300]!r}")
    a = check(run([ctx.ferry, "--state", state, "history", src], timeout=3600, out_lines=True),
              "ferry history SRC")
    if a["out_lines"] != n:
        raise BenchError(f"scale {n:,}: history printed {a['out_lines']} lines, expected {n}")
    into["audit"] = {"verify_wall": v["wall"], "verify_rss_mib": v["rss_mib"],
                     "events_wall": e["wall"], "events_rss_mib": e["rss_mib"],
                     "history_wall": h["wall"], "history_rss_mib": h["rss_mib"],
                     "history_all_wall": a["wall"], "history_all_rss_mib": a["rss_mib"]}
    log(f"scale {n:,}: verify-log {v['wall']:.2f}s {v['rss_mib']:.1f} MiB; "
        f"events {e['wall']:.2f}s {e['rss_mib']:.1f} MiB; history --limit 10 {h['wall']:.2f}s {h['rss_mib']:.1f} MiB; "
        f"history {a['wall']:.2f}s {a['rss_mib']:.1f} MiB")


def last_job(ctx, state):
    r = check(run([ctx.ferry, "--state", state, "jobs", "--json"], timeout=600), "ferry jobs --json")
    try:
        return json.loads(r["out"])[-1]
    except (ValueError, IndexError):
        raise BenchError(f"ferry jobs --json: no job in {state}: {r['out'][:200]}")


def job_totals(job):
    return {k: job.get(k) for k in ("copied", "skipped", "failed")}


def audit_cell(row, what):
    a = row.get("audit")
    return f"{fmt(a[what + '_wall'], 2)} / {fmt(a[what + '_rss_mib'], 1)}" if a and what + "_wall" in a else "-"


def scale_md(res):
    rows = res["rows"]
    if not rows:
        return ""
    base = rows[0]
    lines = ["## 3. Scale: incremental no-op over N unchanged blobs", "",
             "`ferry copy SRC DST --state FRESH --quiet --stats` where SRC holds N empty files in folders of 1,000 and "
             "DST = `cp -al SRC DST` (identical), so every blob is listed at both ends and skipped (checked with "
             "`ferry jobs --json`). CPU from `wait4`, peak RSS from GNU time. Targets: RSS <= 64 MiB at 1M, time linear "
             "(µs per blob flat). After the last rep the log is read back whole: `ferry verify-log` (every event "
             "against every stored checkpoint entry and history line), `ferry events --kind JobFinished` (every "
             "chunk decoded), `ferry history SRC --limit 10` (every line of the job scanned, the newest 10 "
             "kept) and `ferry history SRC` (every line printed newest first, sorted in temp files past 32k lines); "
             "wall and peak RSS of each.", "",
             "| blobs | wall s | µs per blob | µs per blob vs smallest | peak RSS MiB (max) | CPU s | log writer busy "
             "| verify-log s / MiB | events s / MiB | history --limit 10 s / MiB | history (every line) s / MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        us = 1e6 * r["wall"] / r["blobs"]
        us0 = 1e6 * base["wall"] / base["blobs"]
        lines.append(f"| {r['blobs']:,} | {fmt(r['wall'], 3)} | {fmt(us, 1)} | {ratio(us, us0)} "
                     f"| {fmt(r['rss_mib'], 1)} ({fmt(r['rss_max'], 1)}) | {fmt(r['cpu'])} "
                     f"| {fmt(100 * r['writer_busy_share'], 0) + '%' if r['writer_busy_share'] is not None else '-'} "
                     f"| {audit_cell(r, 'verify')} | {audit_cell(r, 'events')} | {audit_cell(r, 'history')} "
                     f"| {audit_cell(r, 'history_all')} |")
    lines.append("")
    return "\n".join(lines)


# ======================================================================== parallel
def parallel(ctx):
    env = ctx.harness_env()
    ctx.azurite()
    n = ctx.sizes["small"]
    src = ctx.dataset_dir("many-small", n if n != 10000 else None)
    src_list = {}
    for dp, _, fns in os.walk(src):
        for fn in fns:
            p = os.path.join(dp, fn)
            src_list[os.path.relpath(p, src)] = os.path.getsize(p)
    if len(src_list) != n:
        raise BenchError(f"parallel: {src} holds {len(src_list)} files, expected {n}")
    helptext = run([ctx.ferry, "copy", "--help"], timeout=60)["out"]
    m = re.search(r"--parallel[^\n]*\n(.*?)(?=\n\s+-)", helptext, re.S)
    auto_in_help = bool(m and "auto" in m.group(0))
    values = {p: [] for p in PARALLEL}
    unavailable = {}
    if not auto_in_help:
        unavailable["auto"] = "not available in this binary (`ferry copy --help` does not offer `--parallel auto`)"
    stamp = time.strftime("%m%d%H%M%S")
    reps = ctx.reps if ctx.quick else max(ctx.reps, PARALLEL_MIN_REPS)
    for rep in range(reps):
        # Each rep starts at another value, so no value always runs first or always follows
        # the same one (Azurite still collecting the previous run's deleted container).
        for p in rotated(PARALLEL, rep):
            if p in unavailable:
                continue
            cont = f"ferrypar-{stamp}-{rep + 1}-{p}"
            ctx.mkcontainer(cont)
            waited = ctx.wait_azurite_idle()
            if waited > 5:
                log(f"parallel {p} rep {rep + 1}: waited {waited:.0f} s for Azurite to go idle")
            state = os.path.join(ctx.scratch, "parallel-state")
            shutil.rmtree(state, ignore_errors=True)
            url = f"{env['AZ_ENDPOINT']}/{cont}?{env['AZ_SAS']}"
            try:
                # --stats for every value, not only auto (which needs it to say where it settled),
                # so the runs differ in --parallel alone.
                r = run(["nice", "-n", str(ctx.nice()), ctx.ferry, "copy", "--state", state, src, url, "--parallel", p,
                         "--stats"], env=env, timeout=3600)
                if r["rc"] == 2 and p == "auto" and "invalid value" in r["err"]:
                    unavailable["auto"] = "not available in this binary (`--parallel auto` refused: " + \
                                          r["err"].strip().splitlines()[0][:120] + ")"
                    continue
                check(r, f"ferry copy --parallel {p}")
                job = last_job(ctx, state)
                t = job_totals(job)
                if (t["copied"], t["failed"]) != (n, 0):
                    raise BenchError(f"--parallel {p}: expected {n} copied, 0 failed; the job says {t}")
                got = ctx.list_blobs(cont)
                if got != src_list:
                    bad = len(set(src_list) ^ set(got)) + sum(1 for k in src_list if k in got and got[k] != src_list[k])
                    raise BenchError(f"--parallel {p}: container {cont} does not match {src} ({bad} names/sizes differ)")
                att = (job.get("attempts") or [{}])[-1]
                # `--stats` says where auto settled: "parallel auto: started 16, settled 32 (...), 3 changes".
                settled = re.search(r"parallel auto: started (\d+), settled (\d+)", r["err"] + r["out"])
                values[p].append({"wall": r["wall"], "cpu": r["cpu"], "rss_mib": r["rss_mib"],
                                  "parallelism": att.get("parallelism"),
                                  "settled": int(settled[2]) if settled else None})
                log(f"parallel {p} rep {rep + 1}/{reps}: {r['wall']:.2f}s ({n / r['wall']:.0f} files/s), "
                    f"cpu {r['cpu']:.2f}s, rss {r['rss_mib']:.0f} MiB")
            finally:
                ctx.rmcontainer(cont)
                shutil.rmtree(state, ignore_errors=True)
    rows = []
    for p in PARALLEL:
        if p in unavailable:
            rows.append({"parallel": p, "note": unavailable[p]})
            continue
        v = values[p]
        rows.append({"parallel": p, "runs": v, "wall": median([x["wall"] for x in v]),
                     "cpu": median([x["cpu"] for x in v]), "rss_mib": median([x["rss_mib"] for x in v]),
                     "parallelism": sorted(set(x["parallelism"] for x in v if x["parallelism"] is not None)),
                     "settled": [x["settled"] for x in v if x.get("settled") is not None]})
    return {"files": n, "reps": reps, "rows": rows}


def parallel_md(res):
    rows = res["rows"]
    fixed = [r for r in rows if r["parallel"] != "auto" and "wall" in r]
    best = min(fixed, key=lambda r: r["wall"]) if fixed else None
    lines = ["## 4. `--parallel`: small-file upload to Azurite", "",
             f"`ferry copy SRC CONTAINER_URL --parallel P`, {res['files']:,} x 4 KiB into a fresh container per run "
             "(values interleaved within each rep, each rep starting at the next value, each run once Azurite is "
             "idle; ferry and Azurite at peers.sh's BENCH_NICE) "
             "and checked: the job's counts and the container's names and sizes. Target: `auto` settles near the best "
             "fixed value." + (f" {res['reps']} reps, medians (at least {PARALLEL_MIN_REPS} whatever `--reps` says: one "
                              "sample per value cannot tell values 5% apart)." if res.get("reps", 1) > 1 else ""), "",
             "| --parallel | wall s | files/s | vs best fixed | CPU s | RSS MiB | parallelism the job recorded (auto: started → settled, per rep) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['parallel']} | {r['note']} | | | | | |")
            continue
        lines.append(f"| {r['parallel']}{' (best fixed)' if r is best else ''} | {fmt(r['wall'])} "
                     f"| {fmt(res['files'] / r['wall'], 0)} | {ratio(r['wall'], best['wall'])} | {fmt(r['cpu'])} "
                     f"| {fmt(r['rss_mib'], 0)} | {', '.join(map(str, r['parallelism'])) or '-'}"
                     f"{' → ' + ', '.join(map(str, r['settled'])) if r.get('settled') else ''} |")
    lines.append("")
    return "\n".join(lines)


# ======================================================================== targets
def targets_md(ctx):
    R = ctx.results
    t = []   # (target, measured, verdict)

    def v(ok):
        return "n/a" if ok is None else ("met" if ok else "**NOT met**")

    if R.get("peers"):
        agg = peers_agg(R["peers"])
        def g(ds, sc, tool, k="wall"):   # failed or unverified runs give no verdict
            x = agg.get((ds, sc, tool)) or {}
            return None if x.get("bad") else x.get(k)
        f, a, r = g("many-small", "upload", "ferry"), g("many-small", "upload", "azcopy"), g("many-small", "upload", "rclone")
        if f and a and r:
            t.append(("small upload faster than AzCopy and rclone", f"ferry {f:.2f}s, AzCopy {a:.2f}s, rclone {r:.2f}s",
                      v(f < a and f < r)))
        fc, ac = g("many-small", "upload", "ferry", "cpu_s"), g("many-small", "upload", "azcopy", "cpu_s")
        if fc is not None and ac:
            t.append(("small upload CPU <= 1/4 of AzCopy's", f"{fc:.2f} vs {ac:.2f} CPU s ({fc / ac:.2f})", v(fc <= ac / 4)))
        pr = median([p["req_per_s"] for p in R["peers"]["probes"]])
        fs = g("many-small", "upload", "ferry", "files_s")
        if pr and fs:
            t.append(("small upload >= 85% of Azurite's ceiling", f"{fs:.0f} files/s = {100 * fs / pr:.0f}% of {pr:.0f} req/s",
                      v(fs >= 0.85 * pr)))
        m = g("few-large", "upload", "ferry", "mibs")
        if m:
            t.append(("large upload >= 150 MiB/s", f"{m:.0f} MiB/s", v(m >= 150)))
        f, r = g("few-large", "download", "ferry"), g("few-large", "download", "rclone")
        if f and r:
            t.append(("large download no slower than rclone", f"ferry {f:.2f}s, rclone {r:.2f}s", v(f <= r)))
        f, a, r = g("many-small", "s2s", "ferry"), g("many-small", "s2s", "azcopy"), g("many-small", "s2s", "rclone")
        if f and a and r:
            t.append(("small s2s faster than both peers", f"ferry {f:.2f}s, AzCopy {a:.2f}s, rclone {r:.2f}s",
                      v(f < a and f < r)))
        f, r = g("many-small", "incr-noop", "ferry"), g("many-small", "incr-noop", "rclone")
        if f and r:
            t.append(("no-op re-run no slower than rclone", f"ferry {f:.2f}s, rclone {r:.2f}s", v(f <= r)))
        rows = [x for x in R["peers"]["rows"] if x["tool"] == "ferry" and x["scenario"] == "incr-1pct"]
        if rows:
            t.append(("1% changed: copies exactly the changed blobs",
                      ", ".join(f"copied {x['copied']} of {x.get('copied_expected')}" for x in rows),
                      v(all(x["copied"] == str(x.get("copied_expected")) for x in rows))))
    if R.get("scale") and R["scale"]["rows"]:
        rows = R["scale"]["rows"]
        top = rows[-1]
        t.append((f"no-op at {top['blobs']:,} blobs: peak RSS <= 64 MiB", f"{top['rss_max']:.1f} MiB",
                  v(top["rss_max"] <= 64)))
        if top.get("audit"):
            a = top["audit"]
            peaks = [a["verify_rss_mib"], a["events_rss_mib"], a["history_rss_mib"]]
            every = ""
            if "history_all_rss_mib" in a:
                peaks.append(a["history_all_rss_mib"])
                every = f", history (every line) {a['history_all_rss_mib']:.1f} MiB ({a['history_all_wall']:.2f} s)"
            t.append(("reading that log back: verify-log, events, history (--limit and every line) peak RSS <= 64 MiB",
                      f"verify-log {a['verify_rss_mib']:.1f} MiB ({a['verify_wall']:.2f} s), "
                      f"events {a['events_rss_mib']:.1f} MiB ({a['events_wall']:.2f} s), "
                      f"history --limit 10 {a['history_rss_mib']:.1f} MiB ({a['history_wall']:.2f} s){every}",
                      v(max(peaks) <= 64)))
        if len(rows) >= 2:
            a, b = rows[-2], rows[-1]
            ua, ub = a["wall"] / a["blobs"], b["wall"] / b["blobs"]
            t.append(("no-op time linear in blobs (µs/blob at the largest <= 1.25x the next)",
                      f"{1e6 * ua:.1f} µs at {a['blobs']:,}, {1e6 * ub:.1f} µs at {b['blobs']:,}", v(ub <= 1.25 * ua)))
    if R.get("local"):
        d = next((x for x in R["local"]["datasets"] if x["dataset"] == "small"), None)
        if d:
            t.append(("local small <= 1.5x cp -r and faster than rclone",
                      f"ferry/cp {d['ferry_over_cp']:.2f}, ferry/rclone {d['ferry_over_rclone']:.2f}",
                      v(d["ferry_over_cp"] <= 1.5 and d["ferry_over_rclone"] < 1)))
            w = d["writer_median"]
            if w:
                t.append(("log writer busy <= 10% of wall (local small)",
                          f"busy {100 * w['busy_share']:.0f}% (of which waiting for a core {100 * w['wait_share']:.0f}%), "
                          f"CPU {100 * w['cpu_share']:.1f}%; copies held up by a full log queue: "
                          f"{d['full_queue_max'][0]} times (worst rep)", v(w["busy_share"] <= 0.10)))
        for d in R["local"]["datasets"]:
            if d.get("logging_cost"):
                t.append((f"what logging blob outcomes costs the copy of {d['label']} (the issue's \"never the "
                          "bottleneck\", measured; no line set)",
                          f"ferry {d['median']['ferry']:.3f}s, unlogged build {d['median']['ferry-unlogged']:.3f}s; "
                          f"ferry / unlogged {d['logging_cost']:.2f} ({localbench.per_rep(d)})", "measured"))
    if R.get("parallel"):
        rows = R["parallel"]["rows"]
        fixed = [r for r in rows if r["parallel"] != "auto" and "wall" in r]
        auto = next((r for r in rows if r["parallel"] == "auto"), None)
        if auto and "wall" in auto and fixed:
            best = min(fixed, key=lambda r: r["wall"])
            t.append(("--parallel auto within 10% of the best fixed value",
                      f"auto {auto['wall']:.2f}s, best fixed ({best['parallel']}) {best['wall']:.2f}s",
                      v(auto["wall"] <= 1.10 * best["wall"])))
        elif auto:
            t.append(("--parallel auto within 10% of the best fixed value", auto.get("note", "-"), "n/a"))
    if not t:
        return ""
    lines = ["## Targets (issue 8)", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in t]
    return "\n".join(lines) + "\n"


# ======================================================================== main
def write(ctx, hdr, started, interrupted=False):
    parts = [header_md(hdr)]
    if ctx.errors or interrupted:
        parts.append("## FAILED\n\n" + ("Interrupted before the end.\n\n" if interrupted else "")
                     + "\n".join(f"- **{s}**: {m}" for s, m in ctx.errors) + "\n")
    tg = targets_md(ctx)
    if tg:
        parts.append(tg)
    for name, md in (("peers", peers_md), ("local", local_md), ("scale", scale_md), ("parallel", parallel_md)):
        if ctx.results.get(name):
            try:
                parts.append(md(ctx.results[name]))
            except Exception as e:  # a table that cannot be drawn must not hide the others
                parts.append(f"## {name}\n\n**table could not be drawn: {e!r}** (raw data in the JSON)\n")
                ctx.draw_failed = True
    took = ", ".join(f"{k} {v / 60:.1f} min" for k, v in ctx.timing.items())
    raw = [os.path.basename(ctx.json_path)] + ([os.path.basename(ctx.tsv_path)] if ctx.results.get("peers") else [])
    parts.append(f"Section times: {took}; total {(time.time() - started) / 60:.1f} min. Raw data next to this file: "
                 + ", ".join(f"`{x}`" for x in raw) + f", tool output in `{os.path.basename(ctx.logs)}/`"
                 + (" (peers.sh keeps per-run logs under $BENCH_SCRATCH/runs/)" if ctx.results.get("peers") else "")
                 + ".\n")
    md = "\n".join(parts)
    os.makedirs(os.path.dirname(os.path.abspath(ctx.out)), exist_ok=True)
    with open(ctx.out, "w") as f:
        f.write(md)
    with open(ctx.json_path, "w") as f:
        json.dump({"header": hdr, "errors": ctx.errors, "interrupted": interrupted, "timing_s": ctx.timing,
                   "results": ctx.results}, f, indent=1, default=str)
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (1k files, 2 x 16 MiB, scale 1k/10k/100k), 1 rep")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--reps", type=int, help="repetitions per measurement, medians reported (default 3, quick 1)")
    ap.add_argument("--ferry", default=os.path.join(REPO, "target", "release", "ferry"), help="ferry binary")
    ap.add_argument("--unlogged", default="build", metavar="PATH|build|none",
                    help="local section: a `--features unlogged-outcomes` build to time ferry against (what logging "
                         "blob outcomes costs); `build` (default) builds it into target/unlogged, `none` skips it")
    ap.add_argument("--harness", default=os.path.normpath(os.path.join(REPO, "..", "shared", "bench")),
                    help="the shared Azurite harness (peers.sh, azprobe.py, ...)")
    ap.add_argument("--scratch", default=os.path.join(os.environ.get("BENCH_SCRATCH", "/tmp/bench"), "ferry"),
                    help="ferry's scratch: cached trees, state dirs (default $BENCH_SCRATCH/ferry)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"), help="Markdown output")
    a = ap.parse_args()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad or not only:
        ap.error(f"--only: unknown section(s) {','.join(bad) or '(none)'}; choose from {','.join(SECTIONS)}")
    a.only = ",".join(s for s in SECTIONS if s in only)
    if a.reps is not None and a.reps < 1:
        ap.error("--reps must be >= 1")
    a.ferry = os.path.abspath(a.ferry)
    a.harness = os.path.abspath(a.harness)
    a.scratch = os.path.abspath(a.scratch)
    a.out = os.path.abspath(a.out)
    if not os.access(a.ferry, os.X_OK):
        print(f"run.py: no ferry binary at {a.ferry}: run cargo build --release -p ferry", file=sys.stderr)
        sys.exit(2)
    if a.unlogged not in ("build", "none"):
        a.unlogged = os.path.abspath(a.unlogged)
        if not os.access(a.unlogged, os.X_OK):
            print(f"run.py: no unlogged build at {a.unlogged}: pass --unlogged build (or none)", file=sys.stderr)
            sys.exit(2)
    ctx = Ctx(a)
    started = time.time()

    def on_term(signum, frame):   # kill/timeout: end like Ctrl-C (stop our Azurite, write what we have)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        if any(s in a.only for s in ("peers", "parallel")):
            ctx.harness_env()          # harness missing: one line, before anything runs
        if "peers" in a.only:
            ctx.need_peers()
        os.makedirs(ctx.scratch, exist_ok=True)
        shutil.rmtree(ctx.logs, ignore_errors=True)     # nothing stale next to the new table
        os.makedirs(ctx.logs, exist_ok=True)
        for stale in (ctx.tsv_path, ctx.json_path):
            if os.path.exists(stale):
                os.remove(stale)
        if "local" in a.only:
            build_unlogged(ctx)     # before the header, which flags a running build
        hdr = header(ctx)
    except Setup as e:
        print(f"run.py: {e}", file=sys.stderr)
        sys.exit(2)
    log(f"ferry bench: {hdr['mode']} mode, {ctx.reps} rep(s), sections {a.only} -> {a.out}")
    if hdr["builds_running_at_start"]:
        log("warning: cargo/rustc is running: numbers will be noisy (noted in the table)")
    fns = {"peers": peers, "local": local, "scale": scale, "parallel": parallel}
    order = [s for s in ("peers", "parallel", "local", "scale") if s in a.only]   # Azure sections first
    interrupted = False
    try:
        for s in order:
            if s not in ("peers", "parallel"):
                ctx.stop_azurite()      # an idle Azurite still costs memory; the local sections need none
            log(f"== section {s}")
            t0 = time.time()
            try:
                ctx.results[s] = fns[s](ctx)
            except BenchError as e:
                ctx.errors.append((s, str(e)))
                log(f"FAILED {s}: {e}")
            except Setup as e:
                ctx.errors.append((s, str(e)))
                log(f"FAILED {s}: {e}")
            ctx.timing[s] = time.time() - t0
            write(ctx, hdr, started)    # after every section: a crash later keeps what was measured
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted")
    finally:
        ctx.stop_azurite()
    md = write(ctx, hdr, started, interrupted)
    print(md)
    log(f"wrote {a.out} (+ {os.path.basename(ctx.json_path)}, {os.path.basename(ctx.tsv_path)}, "
        f"{os.path.basename(ctx.logs)}/) in {(time.time() - started) / 60:.1f} min")
    if ctx.draw_failed:
        log("a table could not be drawn (see the Markdown)")
    if ctx.errors or interrupted or ctx.draw_failed:
        log(f"{len(ctx.errors)} section(s) failed: " + "; ".join(s for s, _ in ctx.errors))
        sys.exit(1)


if __name__ == "__main__":
    main()
