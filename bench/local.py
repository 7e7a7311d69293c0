#!/usr/bin/env python3
"""Local -> local benchmark: ferry next to `cp -r` and `rclone copy`.

Datasets: 10,000 x 4 KiB files in 100 folders, and 2 x 256 MiB files.
Each tool copies each dataset into a fresh folder, REPS times, interleaved
(cp, rclone, ferry, cp, ...) so slow phases of a shared disk hit every tool;
the table shows medians. ferry runs with --stats, so the log writer's busy
share and CPU time are reported too.

Usage: bench/local.py [--reps 3] [--scratch /tmp/ferry-bench] [--ferry PATH]
Needs: a release build (cargo build --release), rclone (apt-get install rclone).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, time

def make_small(root):
    if os.path.isdir(root) and sum(len(f) for _, _, f in os.walk(root)) == 10000:
        return
    shutil.rmtree(root, ignore_errors=True)
    for d in range(100):
        os.makedirs(f"{root}/dir{d:03}", exist_ok=True)
        for i in range(100):
            with open(f"{root}/dir{d:03}/file{i:04}.bin", "wb") as f:
                f.write(os.urandom(4096))

def make_large(root):
    if os.path.isdir(root) and len(os.listdir(root)) == 2:
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for i in range(2):
        with open(f"{root}/big{i}.bin", "wb") as f:
            for _ in range(256):
                f.write(os.urandom(1 << 20))

def settle(path):
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["sync"])
    time.sleep(1.0)

def timed(cmd, env=None):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()}")
    return wall, p.stdout + p.stderr

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scratch", default="/tmp/ferry-bench")
    ap.add_argument("--ferry", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ferry"))
    args = ap.parse_args()
    ferry = os.path.abspath(args.ferry)
    if not os.access(ferry, os.X_OK):
        sys.exit(f"no ferry binary at {ferry}: run `cargo build --release` first")
    tools = ["cp", "ferry"] + (["rclone"] if shutil.which("rclone") else [])
    if "rclone" not in tools:
        print("rclone not found (apt-get install rclone): its column is left out", file=sys.stderr)
    s = args.scratch
    os.makedirs(s, exist_ok=True)
    make_small(f"{s}/small")
    make_large(f"{s}/large")
    rows = []
    for ds in ["small", "large"]:
        times = {t: [] for t in tools}
        writer = []
        for rep in range(args.reps):
            for tool in tools:
                dst = f"{s}/out-{tool}"
                settle(dst)
                if tool == "cp":
                    wall, _ = timed(["cp", "-r", f"{s}/{ds}", dst])
                elif tool == "rclone":
                    wall, _ = timed(["rclone", "copy", f"{s}/{ds}", dst])
                else:
                    state = f"{s}/state"
                    shutil.rmtree(state, ignore_errors=True)
                    wall, out = timed([ferry, "--state", state, "copy", f"{s}/{ds}", dst, "--stats"])
                    m = re.search(r"log writer: (\d+) events .* busy ([\d.]+)s .*cpu ([\d.]+)s\) of ([\d.]+)s", out)
                    if m:
                        ev, busy, cpu, w = int(m[1]), float(m[2]), float(m[3]), float(m[4])
                        writer.append((ev, busy / w, cpu / w, ev / max(cpu, 1e-9)))
                times[tool].append(wall)
                print(f"{ds} rep {rep + 1} {tool}: {wall:.3f}s", file=sys.stderr)
        settle(f"{s}/out-ferry")
        med = {t: statistics.median(v) for t, v in times.items()}
        rows.append((ds, med, writer))
    print(f"\n| dataset | " + " | ".join(f"{t} s" for t in tools) + " | ferry / cp | ferry / rclone | log writer busy / cpu share of wall | writer events/s of CPU |")
    print("|---" * (len(tools) + 5) + "|")
    for ds, med, writer in rows:
        vs_rclone = f"{med['ferry'] / med['rclone']:.2f}" if "rclone" in med else "-"
        w = ""
        ev = ""
        if writer:
            w = f"{statistics.median(x[1] for x in writer) * 100:.0f}% / {statistics.median(x[2] for x in writer) * 100:.1f}%"
            ev = f"{statistics.median(x[3] for x in writer):,.0f}"
        print(f"| {ds} | " + " | ".join(f"{med[t]:.3f}" for t in tools) + f" | {med['ferry'] / med['cp']:.2f} | {vs_rclone} | {w} | {ev} |")

if __name__ == "__main__":
    main()
