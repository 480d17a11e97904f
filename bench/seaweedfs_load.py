"""Loads the hot 1 KiB objects into a SeaweedFS `weed server` for bench/run.sh (standard library only).

    python3 bench/seaweedfs_load.py S3_URL BUCKET MASTER_URL KEYS_FILE S3_PATHS_OUT VOLUME_PATHS_OUT

Creates BUCKET on the S3 gateway (waiting for the gateway to be ready), PUTs one 1 KiB object per key
of KEYS_FILE to it, uploads the same bytes through the native API (master /dir/assign, then a
multipart POST to the volume server), and writes the request paths for wrk: `/BUCKET/KEY` and
`/FID`. Prints the volume server's URL last, as `volume_url=http://…`.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.read()


def main():
    s3, bucket, master, keys_file, s3_out, vol_out = sys.argv[1:7]
    keys = [k.strip() for k in open(keys_file) if k.strip()]
    body = b"h" * 1024
    deadline = time.time() + 60
    while True:
        try:
            request("PUT", f"{s3}/{bucket}")
            request("PUT", f"{s3}/{bucket}/probe", body)
            break
        except (urllib.error.URLError, OSError) as e:
            if time.time() > deadline:
                sys.exit(f"the S3 gateway did not take a bucket: {e}")
            time.sleep(1)
    with open(s3_out, "w") as out:
        for key in keys:
            request("PUT", f"{s3}/{bucket}/{key}", body, {"Content-Type": "application/octet-stream"})
            out.write(f"/{bucket}/{key}\n")
    boundary = "kvbenchboundary"
    form = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
    volume = None
    with open(vol_out, "w") as out:
        for _ in keys:
            _, answer = request("GET", f"{master}/dir/assign")
            assigned = json.loads(answer)
            volume = "http://" + assigned["url"]
            request("POST", f"{volume}/{assigned['fid']}", form,
                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            out.write(f"/{assigned['fid']}\n")
    print(f"volume_url={volume}")


if __name__ == "__main__":
    main()
