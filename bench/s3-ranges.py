#!/usr/bin/env python3
"""GET every pack of a platter repository on S3 in ranges of one size, N in flight, and print
the wall time and (with --cluster) the CPU the Garage nodes of tests/garage/cluster.sh spent:
how a store's cost depends on the size of the reads (docs/BENCHMARKS.md, "platter on S3").

usage: bench/s3-ranges.py ENV PREFIX [--range BYTES] [--parallel N] [--cluster DIR]
  ENV      the env file cluster.sh wrote (endpoint, bucket, credentials)
  PREFIX   the repository's prefix in the bucket (its packs are under PREFIX/data/)
  --range  bytes per GET (0: whole objects; default 0)
"""
import argparse
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def load_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export "):
            for part in line[len("export "):].split():
                key, _, value = part.partition("=")
                env[key] = value.strip("'\"")
    return env


def garage_ticks(cluster):
    """utime + stime of the cluster's garage processes, in clock ticks."""
    if not cluster:
        return 0
    out = subprocess.run(["pgrep", "-f", f"garage.*{cluster}"], capture_output=True, text=True)
    total = 0
    for pid in out.stdout.split():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("env")
    ap.add_argument("prefix")
    ap.add_argument("--range", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--cluster", default="")
    a = ap.parse_args()
    env = load_env(a.env)
    s3 = boto3.client(
        "s3",
        endpoint_url=env["PLATTER_S3_ENDPOINT"],
        region_name=env.get("AWS_REGION", "garage"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=max(10, a.parallel * 2)),
    )
    bucket = env["PLATTER_S3_BUCKET"]
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=a.prefix.strip("/") + "/data/"
    ):
        objects += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    jobs = []
    for key, size in objects:
        if a.range <= 0:
            jobs.append((key, None))
        else:
            jobs += [(key, f"bytes={o}-{min(size, o + a.range) - 1}") for o in range(0, size, a.range)]

    def get(job):
        key, rng = job
        extra = {"Range": rng} if rng else {}
        return len(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())

    ticks = os.sysconf("SC_CLK_TCK")
    before = garage_ticks(a.cluster)
    start = time.monotonic()
    with ThreadPoolExecutor(a.parallel) as pool:
        total = sum(pool.map(get, jobs))
    wall = time.monotonic() - start
    cpu = (garage_ticks(a.cluster) - before) / ticks
    print(
        f"range={a.range or 'whole'} parallel={a.parallel} requests={len(jobs)} "
        f"MiB={total / 2**20:.0f} wall={wall:.2f}s"
        + (f" garage_cpu={cpu:.2f}s" if a.cluster else "")
    )


if __name__ == "__main__":
    main()
