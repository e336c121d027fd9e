"""CACHE-001 benchmark: clearing one tenant's keys, side by side.

Runs against a private redis-server on a free loopback port (no persistence)
and compares, on identical data rebuilt before every run:

- `avb-companion cache invalidate` (the release build; default COUNT 1000, and
  COUNT 10000),
- django-redis `delete_pattern(itersize=1000)`,
- `redis-cli --scan --pattern … | xargs -n 1000 redis-cli unlink`.

For each run it records the wall time, Redis's own busy time (the sum of
`usec` over `INFO commandstats`, reset before the run), the redis-server
process CPU time, and checks that every tenant key is gone and no other key
was touched. Writes `cache.md` and `cache.json` into the output directory and
prints the Markdown table.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
TENANT = "acme"
PATTERN = f"tenant:{TENANT}:*"
TARGETS = {"django_speedup": 5.0, "redis_cli_speedup": 4.0, "busy_share": 0.70}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A private redis-server; DEBUG is allowed from loopback only, to load
    millions of keys with DEBUG POPULATE in a second or two."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(Path(workdir) / "redis.log", "w")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--enable-debug-command", "local",
                "--dir", str(workdir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"redis://127.0.0.1:{self.port}"
        self.client = redis.Redis(port=self.port, socket_timeout=600)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("redis-server did not start; see its log")
                time.sleep(0.05)

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def busy_seconds(self):
        stats = self.client.info("commandstats")
        return sum(entry["usec"] for entry in stats.values()) / 1e6

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


def populate(server, total, tenant_keys):
    client = server.client
    client.flushall()
    client.execute_command("DEBUG", "POPULATE", total - tenant_keys, "tenant:other")
    client.execute_command("DEBUG", "POPULATE", tenant_keys, f"tenant:{TENANT}")
    size = client.dbsize()
    if size != total:
        raise SystemExit(f"populate made {size} keys, expected {total}")


def count_matching(client, pattern):
    return sum(1 for _ in client.scan_iter(match=pattern, count=10000))


def run_tool(tool, server, args):
    """Runs one tool; returns (wall seconds, timing note)."""
    if tool["kind"] == "companion":
        command = [
            args.companion, "cache", "invalidate",
            "--tenant", TENANT, "--redis", server.url,
            "--scan-count", str(tool["scan_count"]), "--json",
        ]
        env = {k: v for k, v in os.environ.items() if k != "AVB_DATABASE_URL"}
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"avb-companion failed: {done.stderr}")
        return wall
    if tool["kind"] == "django":
        done = subprocess.run(
            [sys.executable, str(HERE / "django_delete.py"), server.url, PATTERN, "1000"],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"django-redis failed: {done.stderr}")
        return json.loads(done.stdout)["seconds"]
    if tool["kind"] == "redis-cli":
        pipeline = (
            f"redis-cli -p {server.port} --scan --pattern '{PATTERN}' "
            f"| xargs -n 1000 redis-cli -p {server.port} unlink > /dev/null"
        )
        started = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True)
        return time.perf_counter() - started
    raise ValueError(tool)


TOOLS = [
    {"name": "avb-companion (COUNT 1000, default)", "kind": "companion", "scan_count": 1000,
     "timing": "whole process"},
    {"name": "avb-companion (COUNT 10000)", "kind": "companion", "scan_count": 10000,
     "timing": "whole process"},
    {"name": "django-redis delete_pattern (itersize 1000)", "kind": "django",
     "timing": "delete_pattern call only"},
    {"name": "redis-cli --scan \\| xargs -n 1000 redis-cli unlink", "kind": "redis-cli",
     "timing": "whole pipeline"},
]


def measure(server, scenario, tool, args):
    runs = []
    for _ in range(args.repeat):
        populate(server, scenario["total"], scenario["tenant"])
        server.client.config_resetstat()
        cpu_before = server.cpu_seconds()
        wall = run_tool(tool, server, args)
        cpu = server.cpu_seconds() - cpu_before
        busy = server.busy_seconds()
        left = count_matching(server.client, PATTERN)
        others = server.client.dbsize() - left
        correct = left == 0 and others == scenario["total"] - scenario["tenant"]
        runs.append({"wall_s": wall, "busy_s": busy, "server_cpu_s": cpu, "correct": correct})
        print(
            f"  {tool['name'].replace(chr(92), '')}: {wall:.3f} s wall, redis busy {busy:.3f} s, "
            f"server cpu {cpu:.2f} s, {'ok' if correct else 'WRONG RESULT'}",
            file=sys.stderr,
        )
    best = min(runs, key=lambda run: run["wall_s"])
    return {
        "tool": tool["name"],
        "timing": tool["timing"],
        "runs": runs,
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "busy_s": statistics.median(run["busy_s"] for run in runs),
        "server_cpu_s": statistics.median(run["server_cpu_s"] for run in runs),
        "best_wall_s": best["wall_s"],
        "correct": all(run["correct"] for run in runs),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companion", required=True, help="path of the avb-companion binary")
    parser.add_argument("--out", required=True, help="directory for cache.md and cache.json")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", "3")))
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")),
                        help="multiply every key count (e.g. 0.1 for a quick look)")
    args = parser.parse_args()

    scenarios = [
        {"name": "1M tenant keys in a 2M-key database", "total": 2_000_000, "tenant": 1_000_000},
        {"name": "10k tenant keys in a 5M-key database", "total": 5_000_000, "tenant": 10_000},
    ]
    for scenario in scenarios:
        scenario["total"] = int(scenario["total"] * args.scale)
        scenario["tenant"] = int(scenario["tenant"] * args.scale)

    results = []
    with tempfile.TemporaryDirectory(prefix="avb-bench-cache-") as workdir:
        server = RedisServer(workdir)
        try:
            version = server.client.info("server")["redis_version"]
            for scenario in scenarios:
                print(f"{scenario['name']}:", file=sys.stderr)
                rows = [measure(server, scenario, tool, args) for tool in TOOLS]
                results.append({**scenario, "rows": rows})
        finally:
            server.stop()

    report = build_report(results, version, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cache.md").write_text(report["markdown"])
    (out / "cache.json").write_text(json.dumps(report["json"], indent=2) + "\n")
    print(report["markdown"])
    print(f"written: {out / 'cache.md'}, {out / 'cache.json'}", file=sys.stderr)


def build_report(results, version, args):
    lines = [
        "# Tenant cache invalidation benchmark (CACHE-001)",
        "",
        f"Redis {version} on loopback, {os.cpu_count()} CPUs; median of {args.repeat} run(s); "
        "data rebuilt with DEBUG POPULATE before every run.",
        "",
    ]
    summary = []
    for scenario in results:
        rows = scenario["rows"]
        ours = rows[0]
        lines += [
            f"## {scenario['name']}",
            "",
            "| tool | wall (s) | tenant keys/s | Redis busy (s, commandstats) | busy / wall "
            "| server CPU (s) | ours is × faster | result |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in rows:
            speedup = row["wall_s"] / ours["wall_s"]
            lines.append(
                f"| {row['tool']} | {row['wall_s']:.3f} | {scenario['tenant'] / row['wall_s']:,.0f} "
                f"| {row['busy_s']:.3f} | {row['busy_s'] / row['wall_s']:.0%} "
                f"| {row['server_cpu_s']:.2f} | {speedup:.1f} | "
                f"{'all tenant keys gone, others intact' if row['correct'] else 'WRONG'} |"
            )
        lines.append("")
        if scenario["tenant"] * 2 == scenario["total"]:
            django = next(r for r in rows if "django" in r["tool"])
            cli = next(r for r in rows if "redis-cli" in r["tool"])
            checks = {
                "django_speedup": django["wall_s"] / ours["wall_s"],
                "redis_cli_speedup": cli["wall_s"] / ours["wall_s"],
                "busy_share": ours["busy_s"] / ours["wall_s"],
            }
            for name, value in checks.items():
                met = value >= TARGETS[name]
                summary.append({"check": name, "value": value, "target": TARGETS[name], "met": met})
                shown = f"{value:.0%}" if name == "busy_share" else f"{value:.1f}×"
                wanted = f"{TARGETS[name]:.0%}" if name == "busy_share" else f"{TARGETS[name]:.0f}×"
                lines.append(f"- {name.replace('_', ' ')}: {shown} (target ≥ {wanted}) "
                             f"{'met' if met else 'MISSED'}")
            lines.append("")
    lines += [
        "Method: wall time of the avb-companion and redis-cli rows is the whole process "
        "(start, connect, run); the django-redis row times only the `delete_pattern` call "
        "(Django import and setup excluded). Redis busy is the sum of `usec` over "
        "`INFO commandstats` after `CONFIG RESETSTAT`: time spent executing commands, "
        "which excludes the server's network I/O, so server CPU is shown too.",
        "",
    ]
    return {
        "markdown": "\n".join(lines),
        "json": {"redis_version": version, "repeat": args.repeat, "scale": args.scale,
                 "scenarios": results, "targets": summary},
    }


if __name__ == "__main__":
    main()
