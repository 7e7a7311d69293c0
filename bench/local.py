#!/usr/bin/env python3
"""Local -> local benchmark: ferry next to `cp -r` and `rclone copy`.

Datasets: 10,000 x 4 KiB files in folders of 100, and 2 x 256 MiB files (sizes can be
changed with --small / --large-count / --large-mib). Each tool copies each dataset into a
fresh folder, REPS times, interleaved (cp, rclone, ferry, cp, ...) so slow phases of a
shared disk hit every tool, each with the source read into the page cache first (rclone
evicts what it reads); the table shows medians. ferry runs with --stats, so the log
writer's busy share and CPU time are reported too. Every copy is checked: the same names
and sizes as the source (and, on the first rep, the same bytes); ferry must report
`copied N files` for the N source files.

With --unlogged PATH (a build with `--features unlogged-outcomes`, which drops blob
outcomes instead of logging them) that binary copies the small dataset too, right before
or after ferry (alternating), and the table gives what logging costs the copy: ferry's
wall time over the unlogged build's, per rep; the figure is the geometric mean of the
medians of the reps where ferry ran first and of those where the unlogged build did, as
the first of the two is often slower on a shared disk (issue 8: "the event log is never the
bottleneck", measured directly rather than through the writer's busy share).

Usage: bench/local.py [--reps 3] [--scratch /tmp/ferry-bench] [--ferry PATH] [--unlogged PATH] [--json FILE]
Needs: a release build (cargo build --release -p ferry), rclone (apt-get install rclone).
bench/run.py imports this module (`bench()`); the command line prints a Markdown table.
"""
import argparse, filecmp, json, math, os, re, shutil, statistics, subprocess, sys, time

WRITER_RE = re.compile(r"log writer: (?P<events>\d+) events .* busy (?P<busy>[\d.]+)s \(cpu (?P<cpu>[\d.]+)s, "
                       r"waiting for a core (?P<wait>[\d.]+)s, waiting for the flusher (?P<fwait>[\d.]+)s\) "
                       r"of (?P<wall>[\d.]+)s.*flusher thread (?P<flush>[\d.]+)s; "
                       r"senders waited for a full queue (?P<full>\d+) times, (?P<full_s>[\d.]+)s")
COPIED_RE = re.compile(r"copied (\d+) files .*failed (\d+)")


class LocalBenchError(Exception):
    pass


def make_small(root, count=10000):
    if os.path.isdir(root) and sum(len(f) for _, _, f in os.walk(root)) == count:
        return
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        d = f"{root}/dir{i // 100:03}"
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(f"{d}/file{i % 100:04}.bin", "wb") as f:
            f.write(os.urandom(4096))


def make_large(root, count=2, mib=256):
    if os.path.isdir(root) and len(os.listdir(root)) == count and all(
            os.path.getsize(f"{root}/{n}") == mib << 20 for n in os.listdir(root)):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for i in range(count):
        with open(f"{root}/big{i}.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))


def tmpfs_dir():
    """A folder in /dev/shm when it is a tmpfs with room for the small dataset twice over
    plus state (~200 MB), else None."""
    try:
        st = os.statvfs("/dev/shm")
        with open("/proc/mounts") as f:
            if not any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f):
                return None
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < 400 << 20:
        return None
    path = "/dev/shm/ferry-bench-local"
    os.makedirs(path, exist_ok=True)
    return path


def settle(path):
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["sync"])
    time.sleep(1.0)


def warm(root):
    """Reads every file under root, so each tool starts with the source in the page cache.
    rclone drops what it read from the cache (fadvise DONTNEED), so whichever tool ran
    after it read a cold source: 0.54-0.58 s for ferry's 10k small files against
    0.32-0.35 s after cp or ferry, and cp 0.73-0.83 s against 0.35-0.38 s. Before
    2026-12-06 ferry always ran right after rclone."""
    for dp, _, fns in os.walk(root):
        for fn in fns:
            with open(os.path.join(dp, fn), "rb") as f:
                while f.read(1 << 20):
                    pass


def timed(cmd, env=None):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise LocalBenchError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return wall, p.stdout + p.stderr


def listing(root):
    out = {}
    for dp, _, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def check_copy(tool, src, dst, src_list, content):
    """Raise unless dst has exactly src's names and sizes (and bytes, if content)."""
    got = listing(dst)
    if got != src_list:
        missing = len(set(src_list) - set(got))
        extra = len(set(got) - set(src_list))
        differ = sum(1 for n in src_list if n in got and got[n] != src_list[n])
        raise LocalBenchError(f"{tool}: copy of {src} differs: {missing} missing, {differ} size differs, {extra} extra")
    if content:
        bad = [n for n in src_list if not filecmp.cmp(os.path.join(src, n), os.path.join(dst, n), shallow=False)]
        if bad:
            raise LocalBenchError(f"{tool}: {len(bad)} files differ in content, e.g. {bad[0]}")


def bench(ferry, scratch, reps=3, small=10000, large_count=2, large_mib=256, log=None, unlogged=None):
    """Run the benchmark; returns a dict (see the --json output). Raises LocalBenchError."""
    log = log or (lambda m: print(m, file=sys.stderr))
    if not shutil.which("rclone"):
        raise LocalBenchError("rclone not found (apt-get install rclone)")
    tools = ["cp", "rclone", "ferry"]
    s = scratch
    os.makedirs(s, exist_ok=True)
    # dataset -> (source, label, folder for outputs and ferry's state)
    datasets = {
        "small": (f"{s}/small-{small}", f"{small:,} x 4 KiB", s),
    }
    # The same files in memory (source, copies and ferry's state): no disk phases, and the
    # copies as fast as they get, where the log's per-blob cost weighs most.
    mem = tmpfs_dir()
    if mem:
        datasets["small-tmpfs"] = (f"{mem}/small-{small}", f"{small:,} x 4 KiB, tmpfs", mem)
    datasets["large"] = (f"{s}/large-{large_count}x{large_mib}M", f"{large_count} x {large_mib} MiB", s)
    make_small(datasets["small"][0], small)
    if mem:
        make_small(datasets["small-tmpfs"][0], small)
    make_large(datasets["large"][0], large_count, large_mib)
    result = {"tools": tools, "reps": reps, "datasets": []}
    for ds, (src, label, base) in datasets.items():
        src_list = listing(src)
        # The unlogged build runs next to ferry, first every other rep, so each pair shares
        # the disk's phase; only on small files, where the log's per-blob cost shows.
        paired = unlogged and ds.startswith("small")
        ds_tools = tools + (["ferry-unlogged"] if paired else [])
        times = {t: [] for t in ds_tools}
        writer = []
        for rep in range(reps):
            order = list(ds_tools)
            if paired and rep % 2:
                order[-2], order[-1] = order[-1], order[-2]
            for tool in order:
                dst = f"{base}/out-{tool}"
                settle(dst)
                warm(src)
                if tool == "cp":
                    wall, _ = timed(["cp", "-r", src, dst])
                elif tool == "rclone":
                    wall, _ = timed(["rclone", "copy", src, dst])
                else:
                    state = f"{base}/state"
                    shutil.rmtree(state, ignore_errors=True)
                if tool == "ferry-unlogged":
                    wall, out = timed([unlogged, "--state", state, "copy", src, dst])
                    if "unlogged-outcomes" not in out:
                        raise LocalBenchError(f"{unlogged} is not an unlogged-outcomes build (no warning saying so)")
                elif tool == "ferry":
                    wall, out = timed([ferry, "--state", state, "copy", src, dst, "--stats"])
                    m = COPIED_RE.search(out)
                    if not m or int(m[1]) != len(src_list) or int(m[2]) != 0:
                        raise LocalBenchError(f"ferry: expected `copied {len(src_list)} files ... failed 0`, got: {out.strip()[-300:]}")
                    m = WRITER_RE.search(out)
                    if not m:
                        raise LocalBenchError(f"ferry --stats printed no `log writer:` line matching {WRITER_RE.pattern!r}: {out.strip()[-300:]}")
                    ev, busy, cpu, wait, w = (int(m["events"]), float(m["busy"]), float(m["cpu"]),
                                              float(m["wait"]), float(m["wall"]))
                    writer.append({"events": ev, "busy_s": busy, "cpu_s": cpu, "wait_s": wait, "wall_s": w,
                                   "busy_share": busy / w, "cpu_share": cpu / w, "wait_share": wait / w,
                                   "events_per_cpu_s": ev / max(cpu, 1e-9),
                                   "full_queue_waits": int(m["full"]), "full_queue_wait_s": float(m["full_s"])})
                check_copy(tool, src, dst, src_list, content=(rep == 0))
                times[tool].append(wall)
                log(f"local {ds} rep {rep + 1}/{reps} {tool}: {wall:.3f}s")
        for tool in ds_tools:
            settle(f"{base}/out-{tool}")
        if base == mem:
            # Memory, not disk: the next run makes it again in a few seconds.
            shutil.rmtree(mem, ignore_errors=True)
        med = {t: statistics.median(v) for t, v in times.items()}
        pairs = [a / b for a, b in zip(times["ferry"], times["ferry-unlogged"])] if paired else []
        # Whichever of the two runs first (or second) in a rep can be the slower one for
        # reasons of the machine's, not the build's (seen with cold sources: 0.65-0.67 with
        # the unlogged build first, 1.15-1.68 with ferry first). Such a bias multiplies one
        # order's ratios and divides the other's, so the geometric mean of the two orders'
        # medians cancels it; with one order only, its median.
        firsts = [[x for i, x in enumerate(pairs) if i % 2 == k] for k in (0, 1)]
        cost = (math.sqrt(statistics.median(firsts[0]) * statistics.median(firsts[1])) if all(firsts)
                else statistics.median(pairs) if pairs else None)
        result["datasets"].append({
            "dataset": ds, "label": label, "files": len(src_list), "bytes": sum(src_list.values()),
            "times": times, "median": med,
            "ferry_over_cp": med["ferry"] / med["cp"], "ferry_over_rclone": med["ferry"] / med["rclone"],
            "writer": writer,
            # ferry / ferry without logging blob outcomes, per rep (adjacent runs).
            "logged_over_unlogged": pairs,
            "logging_cost": cost,
            "writer_median": {k: statistics.median(x[k] for x in writer) for k in
                              ("busy_share", "cpu_share", "wait_share", "events_per_cpu_s")} if writer else None,
            # The worst rep: did the log ever hold a copy up?
            "full_queue_max": max((x["full_queue_waits"], x["full_queue_wait_s"]) for x in writer) if writer else None,
        })
    return result


def per_rep(d):
    """A dataset's ferry / unlogged ratios, rep by rep, for the tables."""
    return "per rep, ferry first on odd reps: " + ", ".join(f"{x:.2f}" for x in d["logged_over_unlogged"])


def markdown(result):
    tools = result["tools"]
    lines = ["| dataset | " + " | ".join(f"{t} s" for t in tools)
             + " | ferry / cp | ferry / rclone | log writer busy / CPU / waiting-for-a-core share of wall | writer events per CPU-second"
             " | copies held up by a full log queue (worst rep) | what logging outcomes costs: ferry / unlogged build (per rep) |",
             "|---" * (len(tools) + 7) + "|"]
    for d in result["datasets"]:
        med, w = d["median"], d["writer_median"]
        ws = f"{w['busy_share'] * 100:.0f}% / {w['cpu_share'] * 100:.1f}% / {w['wait_share'] * 100:.0f}%" if w else "-"
        ev = f"{w['events_per_cpu_s']:,.0f}" if w and d["dataset"].startswith("small") else "-"
        fq = d.get("full_queue_max")
        held = f"{fq[0]} times, {fq[1]:.3f} s" if fq else "-"
        cost = (f"{d['logging_cost']:.2f} ({med['ferry-unlogged']:.3f} s unlogged; {per_rep(d)})"
                if d.get("logging_cost") else "-")
        lines.append(f"| {d['label']} | " + " | ".join(f"{med[t]:.3f}" for t in tools)
                     + f" | {d['ferry_over_cp']:.2f} | {d['ferry_over_rclone']:.2f} | {ws} | {ev} | {held} | {cost} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scratch", default="/tmp/ferry-bench")
    ap.add_argument("--ferry", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ferry"))
    ap.add_argument("--small", type=int, default=10000, help="files in the small dataset (4 KiB each)")
    ap.add_argument("--large-count", type=int, default=2)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--unlogged", metavar="PATH", help="a `--features unlogged-outcomes` build: measure what logging "
                    "blob outcomes costs the small copy")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    args = ap.parse_args()
    ferry = os.path.abspath(args.ferry)
    if not os.access(ferry, os.X_OK):
        sys.exit(f"no ferry binary at {ferry}: run `cargo build --release -p ferry` first")
    try:
        unlogged = os.path.abspath(args.unlogged) if args.unlogged else None
        if unlogged and not os.access(unlogged, os.X_OK):
            sys.exit(f"no unlogged build at {unlogged}: build it with `cargo build --release -p ferry "
                     "--features unlogged-outcomes --target-dir target/unlogged`")
        result = bench(ferry, args.scratch, args.reps, args.small, args.large_count, args.large_mib,
                       unlogged=unlogged)
    except LocalBenchError as e:
        sys.exit(f"local.py: {e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
