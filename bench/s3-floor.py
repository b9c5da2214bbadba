#!/usr/bin/env python3
"""The S3 floor: plain parallel PUT and GET of random bytes, what platter on S3 is compared to.

    bench/s3-floor.py [ENV_FILE] [--mib N] [--object-mib S] [--parallel K] [--runs R]

ENV_FILE is the env file that tests/garage/cluster.sh writes (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, PLATTER_S3_ENDPOINT, PLATTER_S3_BUCKET). Without it, a
3-node cluster is started in a temp dir (ports from GARAGE_PORT_BASE, default 39700 here)
and stopped at the end.

Each run PUTs N MiB (default 256) of random data as objects of S MiB (default 16), K at a
time (default 4), then GETs them all back K at a time, then deletes them. Prints MB/s
(10^6 bytes per second) of each run and the median of R runs (default 3).

The client: boto3 put_object/get_object, one request per object (no multipart), path-style,
SigV4 over plain HTTP (so botocore hashes each body with SHA-256 to sign it) and botocore's
default CRC32 checksum on PUT: the work any signing client that sends a checksum does.
The cluster's settings are printed from its node config (replication 3, lmdb, fsync and
compression as cluster.sh sets them).
"""

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "tests", "garage", "cluster.sh")


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export "):
            for pair in line[len("export "):].split():
                k, _, v = pair.partition("=")
                env[k] = v
    return env


def settings(env_path):
    conf = os.path.join(os.path.dirname(os.path.abspath(env_path)), "node1", "garage.toml")
    if not os.path.exists(conf):
        return "cluster settings unknown (no node1/garage.toml next to the env file)"
    keep = ("replication_factor", "consistency_mode", "db_engine", "metadata_fsync", "data_fsync",
            "compression_level", "block_size")
    vals = {}
    for line in open(conf):
        k, _, v = line.partition("=")
        if k.strip() in keep:
            vals[k.strip()] = v.strip().strip('"')
    return ", ".join(f"{k}={vals.get(k, '?')}" for k in keep)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("env", nargs="?", help="env file from tests/garage/cluster.sh (default: start a cluster)")
    ap.add_argument("--mib", type=int, default=256, help="MiB per run (default 256)")
    ap.add_argument("--object-mib", type=int, default=16, help="object size in MiB (default 16)")
    ap.add_argument("--parallel", type=int, default=4, help="requests in flight (default 4)")
    ap.add_argument("--runs", type=int, default=3, help="runs, the median is reported (default 3)")
    a = ap.parse_args()

    tmp = None
    env_path = a.env
    if env_path is None:
        tmp = tempfile.mkdtemp(prefix="s3-floor-")
        d = os.path.join(tmp, "cluster")
        cenv = dict(os.environ, GARAGE_PORT_BASE=os.environ.get("GARAGE_PORT_BASE", "39700"))
        subprocess.run([CLUSTER, "start", d], check=True, env=cenv)
        env_path = os.path.join(d, "env")
    try:
        run(a, env_path)
    finally:
        if tmp:
            subprocess.run([CLUSTER, "stop", os.path.join(tmp, "cluster")], env=cenv)
            shutil.rmtree(tmp, ignore_errors=True)


def run(a, env_path):
    env = read_env(env_path)
    bucket = env["PLATTER_S3_BUCKET"]
    s3 = boto3.client(
        "s3",
        endpoint_url=env["PLATTER_S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=max(10, a.parallel),
                      retries={"total_max_attempts": 1}),
    )
    size = a.object_mib * 1024 * 1024
    count = max(1, a.mib // a.object_mib)
    total = count * size
    objects = [os.urandom(size) for _ in range(count)]
    print(f"s3-floor: {count} objects x {a.object_mib} MiB = {total / 2**20:.0f} MiB, {a.parallel} in flight, "
          f"{a.runs} runs; endpoint {env['PLATTER_S3_ENDPOINT']} bucket {bucket}")
    print(f"s3-floor: cluster: {settings(env_path)}")
    puts, gets = [], []
    for r in range(a.runs):
        prefix = f"s3-floor/{uuid.uuid4().hex}/"
        keys = [f"{prefix}{i:05d}" for i in range(count)]
        with concurrent.futures.ThreadPoolExecutor(a.parallel) as ex:
            t = time.monotonic()
            list(ex.map(lambda i: s3.put_object(Bucket=bucket, Key=keys[i], Body=objects[i]), range(count)))
            put_s = time.monotonic() - t

            def get(i):
                body = s3.get_object(Bucket=bucket, Key=keys[i])["Body"]
                n = 0
                while True:
                    chunk = body.read(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
                if n != size:
                    raise RuntimeError(f"{keys[i]}: read {n} bytes, expected {size}")

            t = time.monotonic()
            list(ex.map(get, range(count)))
            get_s = time.monotonic() - t
            list(ex.map(lambda k: s3.delete_object(Bucket=bucket, Key=k), keys))
        puts.append(total / 1e6 / put_s)
        gets.append(total / 1e6 / get_s)
        print(f"s3-floor: run {r + 1}: PUT {puts[-1]:.1f} MB/s ({put_s:.2f}s), GET {gets[-1]:.1f} MB/s ({get_s:.2f}s)")
    print(f"s3-floor: median of {a.runs}: PUT {statistics.median(puts):.1f} MB/s, GET {statistics.median(gets):.1f} MB/s")


if __name__ == "__main__":
    sys.exit(main())
