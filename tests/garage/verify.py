#!/usr/bin/env python3
"""Check a Garage test cluster for real and record how it answers (issue 13 groundwork).

    tests/garage/verify.py            start a cluster in a temp dir, check, stop, clean up
    tests/garage/verify.py --keep     leave the cluster's folder (its logs) behind

Needs python3 with boto3 (pip install boto3, or apt install python3-boto3) and garage
(see cluster.sh). Prints one line per check: "ok" or "FAIL", and what Garage answered, and
"note" lines for behaviour worth knowing that is not required (Garage 2.5.0 ignores
conditional writes; a deleted object can stay listed for ~100 ms). Exits 1 when a check fails. GARAGE_PORT_BASE picks the ports (default 39800 here, so it
does not collide with a cluster on cluster.sh's default).
"""

import base64
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "cluster.sh")
FAILED = []


def report(ok, what, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILED.append(what)


def note(what, detail):
    """A fact about Garage worth knowing, not a check."""
    print(f"note {what}: {detail}", flush=True)


def cluster(*args, env=None):
    out = subprocess.run([CLUSTER, *args], check=True, capture_output=True, text=True, env=env)
    return out.stdout


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export "):
            for pair in line[len("export "):].split():
                k, _, v = pair.partition("=")
                env[k] = v
    return env


def client(env, key=None, secret=None, region=None, endpoint=None):
    return boto3.client(
        "s3",
        endpoint_url=endpoint or env["PLATTER_S3_ENDPOINT"],
        aws_access_key_id=key or env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        region_name=region or env["AWS_REGION"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def err(e):
    r = e.response
    return f"HTTP {r['ResponseMetadata'].get('HTTPStatusCode')} {r['Error'].get('Code')} ({r['Error'].get('Message')})"


def raw_request(env, method, path, region, body=b""):
    """A SigV4-signed request without botocore's retries and redirects: (status, body text)."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = env["PLATTER_S3_ENDPOINT"] + path
    req = AWSRequest(method=method, url=url, data=body,
                     headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3", region).add_auth(req)
    r = urllib.request.Request(url, data=body or None, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def expect_error(what, fn, status=None, code=None):
    try:
        fn()
    except ClientError as e:
        got_status = e.response["ResponseMetadata"].get("HTTPStatusCode")
        got_code = e.response["Error"].get("Code")
        ok = (status is None or got_status == status) and (code is None or got_code == code)
        report(ok, what, err(e))
        return e
    report(False, what, "no error")
    return None


def main():
    keep = "--keep" in sys.argv
    base = os.environ.get("GARAGE_PORT_BASE", "39800")
    tmp = tempfile.mkdtemp(prefix="garage-verify-")
    cenv = dict(os.environ, GARAGE_PORT_BASE=base)
    d = os.path.join(tmp, "cluster")
    try:
        t = time.monotonic()
        cluster("start", d, env=cenv)
        report(True, "cluster start", f"{time.monotonic() - t:.2f}s")
        t = time.monotonic()
        cluster("start", d, env=cenv)
        report(True, "cluster start again (already running)", f"{time.monotonic() - t:.2f}s")
        checks(d, cenv)
    finally:
        subprocess.run([CLUSTER, "stop", d], env=cenv)
        if keep:
            print(f"cluster folder kept: {d}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
        sys.exit(1)


def checks(d, cenv):
    env = read_env(os.path.join(d, "env"))
    bucket = env["PLATTER_S3_BUCKET"]
    s3 = client(env)

    # Basic object operations.
    body = os.urandom(100_000)
    r = s3.put_object(Bucket=bucket, Key="basic/one", Body=body)
    report(r["ResponseMetadata"]["HTTPStatusCode"] == 200, "PUT", f"ETag {r['ETag']}")
    got = s3.get_object(Bucket=bucket, Key="basic/one")
    report(got["Body"].read() == body, "GET returns the bytes")
    lst = s3.list_objects_v2(Bucket=bucket, Prefix="basic/")
    report([(o["Key"], o["Size"]) for o in lst.get("Contents", [])] == [("basic/one", len(body))],
           "LIST right after PUT shows the object with its size")
    r = s3.delete_object(Bucket=bucket, Key="basic/one")
    report(r["ResponseMetadata"]["HTTPStatusCode"] == 204, "DELETE", "HTTP 204")
    r = s3.delete_object(Bucket=bucket, Key="basic/never-there")
    report(r["ResponseMetadata"]["HTTPStatusCode"] == 204, "DELETE of a missing key", "HTTP 204 (no error)")
    expect_error("GET of a missing key", lambda: s3.get_object(Bucket=bucket, Key="basic/one"), 404, "NoSuchKey")
    expect_error("HEAD of a missing key", lambda: s3.head_object(Bucket=bucket, Key="basic/one"), 404)

    # Ranged GET.
    s3.put_object(Bucket=bucket, Key="range", Body=body)
    r = s3.get_object(Bucket=bucket, Key="range", Range="bytes=1000-1999")
    st = r["ResponseMetadata"]["HTTPStatusCode"]
    data = r["Body"].read()
    report(st == 206 and data == body[1000:2000], "ranged GET",
           f"HTTP {st}, Content-Range {r.get('ContentRange')}, {len(data)} bytes")
    r = s3.get_object(Bucket=bucket, Key="range", Range=f"bytes=99000-{len(body) + 5000}")
    st = r["ResponseMetadata"]["HTTPStatusCode"]
    report(st == 206, "ranged GET past the end", f"HTTP {st}, Content-Range {r.get('ContentRange')}")
    expect_error("ranged GET starting past the end",
                 lambda: s3.get_object(Bucket=bucket, Key="range", Range=f"bytes={len(body) + 10}-"), 416)

    # Multipart upload.
    key = "multi/obj"
    parts_data = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(123_457)]
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for i, p in enumerate(parts_data, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, PartNumber=i, UploadId=up["UploadId"], Body=p)
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    lst = s3.list_objects_v2(Bucket=bucket, Prefix="multi/")
    report(lst.get("KeyCount", 0) == 0, "an unfinished multipart upload is not listed as an object")
    mpu = s3.list_multipart_uploads(Bucket=bucket, Prefix="multi/")
    report(len(mpu.get("Uploads", [])) == 1, "ListMultipartUploads shows it",
           f"Initiated {mpu['Uploads'][0]['Initiated'] if mpu.get('Uploads') else '-'}")
    r = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})
    whole = b"".join(parts_data)
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    report(got == whole, "multipart upload completes and reads back", f"ETag {r['ETag']}")
    up = s3.create_multipart_upload(Bucket=bucket, Key="multi/aborted")
    s3.upload_part(Bucket=bucket, Key="multi/aborted", PartNumber=1, UploadId=up["UploadId"], Body=b"x" * 100)
    s3.abort_multipart_upload(Bucket=bucket, Key="multi/aborted", UploadId=up["UploadId"])
    mpu = s3.list_multipart_uploads(Bucket=bucket, Prefix="multi/")
    report(len(mpu.get("Uploads", [])) == 0, "AbortMultipartUpload removes it")
    up = s3.create_multipart_upload(Bucket=bucket, Key="multi/small")
    rs = [s3.upload_part(Bucket=bucket, Key="multi/small", PartNumber=i, UploadId=up["UploadId"], Body=b"y" * 1000)
          for i in (1, 2)]
    try:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="multi/small", UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": i, "ETag": r["ETag"]} for i, r in zip((1, 2), rs)]})
        report(True, "multipart with a part under 5 MiB (not last)", "accepted: Garage does not enforce "
               "S3's 5 MiB minimum part size (AWS answers 400 EntityTooSmall)")
    except ClientError as e:
        report(True, "multipart with a part under 5 MiB (not last)", err(e))
        s3.abort_multipart_upload(Bucket=bucket, Key="multi/small", UploadId=up["UploadId"])

    # Errors: missing bucket, wrong secret, wrong region, read-only key.
    expect_error("missing bucket (GET)", lambda: s3.get_object(Bucket="no-such-bucket", Key="x"), 404, "NoSuchBucket")
    expect_error("missing bucket (ListObjectsV2)", lambda: s3.list_objects_v2(Bucket="no-such-bucket"), 404, "NoSuchBucket")
    expect_error("missing bucket (PUT)", lambda: s3.put_object(Bucket="no-such-bucket", Key="x", Body=b"x"), 404, "NoSuchBucket")
    expect_error("HEAD of a missing bucket", lambda: s3.head_bucket(Bucket="no-such-bucket"), 404)
    bad = client(env, secret="0" * 64)
    expect_error("wrong secret", lambda: bad.list_objects_v2(Bucket=bucket), 403)
    expect_error("wrong secret (PUT)", lambda: bad.put_object(Bucket=bucket, Key="x", Body=b"x"), 403)
    unknown = client(env, key="GK" + "0" * 24)
    expect_error("unknown access key id", lambda: unknown.list_objects_v2(Bucket=bucket), 403)
    # botocore follows the region Garage names in its error and retries (S3RegionRedirector), so
    # ask with a raw signed request to see what any other client gets.
    for region in ("us-east-1", "eu-west-3"):
        st, body_ = raw_request(env, "GET", f"/{bucket}?list-type=2", region)
        code = body_.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body_ else "?"
        msg = body_.split("<Message>")[1].split("</Message>")[0] if "<Message>" in body_ else body_[:200]
        report(st == 400 and code == "AuthorizationHeaderMalformed", f"wrong region ({region}, raw request)",
               f"HTTP {st} {code} ({msg})")
    wr = client(env, region="us-east-1")
    try:
        wr.put_object(Bucket=bucket, Key="wrong-region", Body=b"x")
        report(True, "wrong region with boto3", "succeeds: botocore retries in the region named by the error")
    except ClientError as e:
        report(True, "wrong region with boto3", err(e))
    expect_error("CreateBucket with the main key (no create-bucket right)",
                 lambda: s3.create_bucket(Bucket="made-by-client"))
    out = cluster("key", d, "maker", "--create-bucket", env=cenv)
    kv = dict(line.split("=", 1) for line in out.split())
    mk = client(env, key=kv["AWS_ACCESS_KEY_ID"], secret=kv["AWS_SECRET_ACCESS_KEY"])
    r = mk.create_bucket(Bucket="made-by-client")
    mk.put_object(Bucket="made-by-client", Key="k", Body=b"made")
    report(mk.get_object(Bucket="made-by-client", Key="k")["Body"].read() == b"made",
           "CreateBucket with a --create-bucket key, then PUT/GET in it",
           f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}")
    # S3 CreateBucket makes the name a local alias of the creating key: other keys do not see it.
    expect_error("the main key on a bucket another key created with S3 CreateBucket (a local alias)",
                 lambda: s3.get_object(Bucket="made-by-client", Key="k"), 404, "NoSuchBucket")
    try:
        mk.create_bucket(Bucket="made-by-client")
        report(True, "CreateBucket again on an existing bucket it owns", "HTTP 200 (no error)")
    except ClientError as e:
        report(True, "CreateBucket again on an existing bucket it owns", err(e))
    out = cluster("key", d, "reader", "--read-only", env=cenv)
    kv = dict(line.split("=", 1) for line in out.split())
    ro = client(env, key=kv["AWS_ACCESS_KEY_ID"], secret=kv["AWS_SECRET_ACCESS_KEY"])
    r = ro.get_object(Bucket=bucket, Key="range")
    report(r["Body"].read() == body, "read-only key: GET works")
    report("Contents" in ro.list_objects_v2(Bucket=bucket), "read-only key: LIST works")
    expect_error("read-only key: PUT", lambda: ro.put_object(Bucket=bucket, Key="ro", Body=b"x"), 403, "AccessDenied")
    expect_error("read-only key: DELETE", lambda: ro.delete_object(Bucket=bucket, Key="range"), 403, "AccessDenied")
    expect_error("read-only key: CreateMultipartUpload",
                 lambda: ro.create_multipart_upload(Bucket=bucket, Key="ro"), 403, "AccessDenied")
    out = cluster("key", d, "reader", "--read-only", env=cenv)
    report(dict(line.split("=", 1) for line in out.split()) == kv, "cluster.sh key is idempotent")
    cluster("bucket", d, "second", env=cenv)
    cluster("bucket", d, "second", env=cenv)
    s3.put_object(Bucket="second", Key="k", Body=b"second")
    report(s3.get_object(Bucket="second", Key="k")["Body"].read() == b"second", "cluster.sh bucket: usable by the main key")
    expect_error("reader key on a bucket it was not given", lambda: ro.get_object(Bucket="second", Key="k"), 403, "AccessDenied")

    # Last-Modified granularity: raw header and raw listing XML.
    raw = {}

    def grab(http_response, **kw):
        raw["body"] = http_response.content

    s3.meta.events.register("after-call.s3.ListObjectsV2", grab)
    s3.list_objects_v2(Bucket=bucket, Prefix="range")
    s3.meta.events.unregister("after-call.s3.ListObjectsV2", grab)
    xml = raw.get("body", b"").decode(errors="replace")
    lm_xml = xml.split("<LastModified>")[1].split("</LastModified>")[0] if "<LastModified>" in xml else "?"
    h = s3.head_object(Bucket=bucket, Key="range")
    report(True, "Last-Modified", f"HEAD header '{h['ResponseMetadata']['HTTPHeaders'].get('last-modified')}', "
           f"listing '{lm_xml}'")
    t1 = s3.head_object(Bucket=bucket, Key="range")["LastModified"]
    s3.put_object(Bucket=bucket, Key="range", Body=body)
    t2 = s3.head_object(Bucket=bucket, Key="range")["LastModified"]
    report(t2 >= t1, "Last-Modified moves on overwrite", f"{t1.isoformat()} -> {t2.isoformat()}")

    # Listing with prefix and delimiter, page size.
    for k in ["a/x", "a/b/y", "a/b/z", "ab/q", "a"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    r = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    keys = [o["Key"] for o in r.get("Contents", [])]
    prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    report(keys == ["a/x"] and prefixes == ["a/b/"], "ListObjectsV2 prefix 'a/' delimiter '/'",
           f"Contents {keys}, CommonPrefixes {prefixes}")
    r = s3.list_objects_v2(Bucket=bucket, Prefix="a")
    report(True, "ListObjectsV2 prefix 'a' (no slash)", f"{[o['Key'] for o in r.get('Contents', [])]} (a prefix is a string prefix)")

    n = 1100
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: s3.put_object(Bucket=bucket, Key=f"many/{i:05d}", Body=b""), range(n)))
    r = s3.list_objects_v2(Bucket=bucket, Prefix="many/", MaxKeys=5000)
    first = r["KeyCount"]
    total, pages, token = 0, 0, None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=bucket, Prefix="many/", **kw)
        total += r["KeyCount"]
        pages += 1
        if not r.get("IsTruncated"):
            break
        token = r["NextContinuationToken"]
    report(total == n, "ListObjectsV2 pagination", f"MaxKeys=5000 gives {first} keys per page; "
           f"{n} keys in {pages} pages with ContinuationToken")
    r = s3.list_objects_v2(Bucket=bucket, Prefix="many/", MaxKeys=7)
    report(r["KeyCount"] == 7 and r["IsTruncated"], "ListObjectsV2 MaxKeys=7", f"{r['KeyCount']} keys, truncated")

    # List-after-write across nodes: a PUT through node 1, then at once a LIST through each node
    # (prune decides by listing: a listing that missed a new object would delete live data).
    # And list-after-delete: a DELETE through node 2, then LIST through each node.
    base = int(env["PLATTER_S3_ENDPOINT"].rsplit(":", 1)[1])
    nodes = [s3] + [client(env, endpoint=f"http://127.0.0.1:{base + 10 * i}") for i in (1, 2)]
    missed, stale, head_stale, rounds = 0, 0, 0, 100
    for i in range(rounds):
        k = f"raw/{i:04d}"
        s3.put_object(Bucket=bucket, Key=k, Body=b"r")
        for c in nodes:
            missed += k not in [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="raw/").get("Contents", [])]
        nodes[1].delete_object(Bucket=bucket, Key=k)
        for c in nodes:
            stale += k in [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="raw/").get("Contents", [])]
        try:
            s3.head_object(Bucket=bucket, Key=k)
            head_stale += 1
        except ClientError:
            pass
    report(missed == 0, "list-after-write: a PUT is listed at once by every node",
           f"{missed} of {3 * rounds} listings missed it")
    report(head_stale == 0, "read-after-delete: HEAD after DELETE (through another node) is 404",
           f"{head_stale} of {rounds} still found it")
    note("list-after-delete: a DELETE through node 2, then LIST through each node",
         f"{stale} of {3 * rounds} listings still showed the deleted object (for up to ~100 ms)")

    # Checksums on PUT.
    md5 = base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    r = s3.put_object(Bucket=bucket, Key="sum/md5", Body=b"hello", ContentMD5=md5)
    report(True, "PUT with the right Content-MD5", "accepted")
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    expect_error("PUT with a wrong Content-MD5 (is it checked?)",
                 lambda: s3.put_object(Bucket=bucket, Key="sum/md5bad", Body=b"hello", ContentMD5=wrong_md5), 400)
    sha = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    r = s3.put_object(Bucket=bucket, Key="sum/sha", Body=b"hello", ChecksumSHA256=sha)
    report(True, "PUT with the right x-amz-checksum-sha256", "accepted")
    wrong_sha = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    expect_error("PUT with a wrong x-amz-checksum-sha256 (is it checked?)",
                 lambda: s3.put_object(Bucket=bucket, Key="sum/shabad", Body=b"hello", ChecksumSHA256=wrong_sha), 400)
    wrong_crc = base64.b64encode(b"\0\0\0\0").decode()
    expect_error("PUT with a wrong x-amz-checksum-crc32c (is it checked?)",
                 lambda: s3.put_object(Bucket=bucket, Key="sum/crcbad", Body=b"hello", ChecksumCRC32C=wrong_crc), 400)
    h = s3.head_object(Bucket=bucket, Key="sum/sha", ChecksumMode="ENABLED")
    report("ChecksumSHA256" in h, "HEAD with ChecksumMode returns the stored sha256", str(h.get("ChecksumSHA256")))
    for k in ["sum/md5bad", "sum/shabad", "sum/crcbad"]:
        try:
            s3.head_object(Bucket=bucket, Key=k)
            report(False, f"a rejected PUT left nothing ({k})", "object exists")
        except ClientError:
            report(True, f"a rejected PUT left nothing ({k})")

    # Conditional writes: recorded, not required (Garage 2.5.0 ignores them, see the notes).
    r1 = s3.put_object(Bucket=bucket, Key="cond/one", Body=b"first", IfNoneMatch="*")
    try:
        s3.put_object(Bucket=bucket, Key="cond/one", Body=b"second", IfNoneMatch="*")
        got = s3.get_object(Bucket=bucket, Key="cond/one")["Body"].read()
        note("PUT If-None-Match: * on an existing key", f"IGNORED: HTTP 200 and the object is now {got!r}")
    except ClientError as e:
        note("PUT If-None-Match: * on an existing key", f"honoured: {err(e)}")
    et = s3.head_object(Bucket=bucket, Key="cond/one")["ETag"]
    s3.put_object(Bucket=bucket, Key="cond/one", Body=b"third")
    try:
        s3.put_object(Bucket=bucket, Key="cond/one", Body=b"4", IfMatch=et)
        got = s3.get_object(Bucket=bucket, Key="cond/one")["Body"].read()
        note("PUT If-Match: <stale etag>", f"IGNORED: HTTP 200 and the object is now {got!r}")
    except ClientError as e:
        note("PUT If-Match: <stale etag>", f"honoured: {err(e)}")
    up = s3.create_multipart_upload(Bucket=bucket, Key="cond/one")
    p = s3.upload_part(Bucket=bucket, Key="cond/one", PartNumber=1, UploadId=up["UploadId"], Body=b"mp")
    try:
        s3.complete_multipart_upload(Bucket=bucket, Key="cond/one", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]},
                                     IfNoneMatch="*")
        got = s3.get_object(Bucket=bucket, Key="cond/one")["Body"].read()
        note("CompleteMultipartUpload If-None-Match: * on an existing key", f"IGNORED: the object is now {got!r}")
    except ClientError as e:
        note("CompleteMultipartUpload If-None-Match: * on an existing key", f"honoured: {err(e)}")
        s3.abort_multipart_upload(Bucket=bucket, Key="cond/one", UploadId=up["UploadId"])
    try:
        s3.get_object(Bucket=bucket, Key="cond/one", IfNoneMatch=s3.head_object(Bucket=bucket, Key="cond/one")["ETag"])
        note("GET If-None-Match: <current etag>", "HTTP 200")
    except ClientError as e:
        note("GET If-None-Match: <current etag>", err(e))

    # One node stopped: quorum 2 of 3 still reads and writes.
    t = time.monotonic()
    cluster("stop-node", d, "3", env=cenv)
    report(True, "stop-node 3", f"{time.monotonic() - t:.2f}s")
    t = time.monotonic()
    big = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="degraded/put", Body=big)
    ok = s3.get_object(Bucket=bucket, Key="degraded/put")["Body"].read() == big
    ok = ok and s3.get_object(Bucket=bucket, Key="range")["Body"].read() == body
    n = len(s3.list_objects_v2(Bucket=bucket, Prefix="many/")["Contents"])
    report(ok and n == 1000, "one node stopped: PUT, GET and LIST work", f"{time.monotonic() - t:.2f}s")
    cluster("stop-node", d, "2", "--kill", env=cenv)
    t = time.monotonic()
    try:
        s3.put_object(Bucket=bucket, Key="degraded/noquorum", Body=b"x")
        report(False, "two nodes stopped: PUT fails (no quorum)", "succeeded")
    except ClientError as e:
        report(True, "two nodes stopped: PUT fails (no quorum)", f"{err(e)} after {time.monotonic() - t:.1f}s")
    except botocore.exceptions.ReadTimeoutError as e:
        report(True, "two nodes stopped: PUT fails (no quorum)", f"read timeout after {time.monotonic() - t:.1f}s")
    t = time.monotonic()
    try:
        s3.get_object(Bucket=bucket, Key="range")["Body"].read()
        report(False, "two nodes stopped: GET fails (no read quorum)", "succeeded")
    except ClientError as e:
        report(True, "two nodes stopped: GET fails (no read quorum)", f"{err(e)} after {time.monotonic() - t:.1f}s")
    except botocore.exceptions.ReadTimeoutError:
        report(True, "two nodes stopped: GET fails (no read quorum)", f"read timeout after {time.monotonic() - t:.1f}s")
    t = time.monotonic()
    cluster("start-node", d, "2", env=cenv)
    cluster("start-node", d, "3", env=cenv)
    report(True, "start-node 2 and 3", f"{time.monotonic() - t:.2f}s")
    report(s3.get_object(Bucket=bucket, Key="degraded/put")["Body"].read() == big,
           "after restart: the object written with one node down reads back")

    # Every node stopped.
    t = time.monotonic()
    cluster("stop", d, env=cenv)
    report(True, "stop (all nodes)", f"{time.monotonic() - t:.2f}s")
    try:
        s3.list_objects_v2(Bucket=bucket)
        report(False, "all nodes stopped: connection refused", "answered")
    except EndpointConnectionError as e:
        cause = e.kwargs.get("error")
        while getattr(cause, "__context__", None) is not None and not isinstance(cause, ConnectionRefusedError):
            cause = cause.__context__
        report(isinstance(cause, ConnectionRefusedError), "all nodes stopped: connection refused",
               f"{type(cause).__name__}: {cause}")
    t = time.monotonic()
    cluster("start", d, env=cenv)
    report(True, "start again on the same folder (data kept)", f"{time.monotonic() - t:.2f}s")
    env2 = read_env(os.path.join(d, "env"))
    report(env2 == env, "the env file is the same after a restart")
    report(s3.get_object(Bucket=bucket, Key="degraded/put")["Body"].read() == big, "after a full restart: data reads back")


if __name__ == "__main__":
    main()
