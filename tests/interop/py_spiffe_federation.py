"""py-spiffe (the `spiffe` package, on grpcio) sees a federated trust
domain's bundle through a Hallmark agent; Python's own ssl and json read a
Hallmark issuer's https_web bundle endpoint.

Run by tests/e2e/federation.rs with the venv of tests/interop/setup-venv.sh:

    SPIFFE_ENDPOINT_SOCKET=unix:/path/to/agent.sock \
        target/interop-venv/bin/python tests/interop/py_spiffe_federation.py \
        https://127.0.0.1:PORT/ /path/to/endpoint-ca.pem

Prints one JSON object on stdout:

    {"x509": {"<td>": ["<sha256 of each CA certificate, DER>", ...]},
     "jwt": {"<td>": ["<kid>", ...]},
     "endpoint": {"status": 200, "content_type": "...", "sequence": N,
                  "x509": [...sha256...], "kids": [...]}}

Any error exits non-zero with the reason on stderr.
"""

import base64
import hashlib
import json
import ssl
import sys
import urllib.request

from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient

TIMEOUT = 30.0


def der_sha256(cert):
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def main():
    url, ca_file = sys.argv[1], sys.argv[2]
    with WorkloadApiClient() as client:
        x509 = client.fetch_x509_bundles(timeout=TIMEOUT)
        jwt = client.fetch_jwt_bundles(timeout=TIMEOUT)
    x509_out = {
        b.trust_domain.name: sorted(der_sha256(c) for c in b.x509_authorities)
        for b in x509.bundles
    }
    jwt_out = {b.trust_domain.name: sorted(b.jwt_authorities.keys()) for b in jwt.bundles}

    # The https_web endpoint, checked the way any HTTPS client would: the
    # certificate against the CA file and the URL's host, then plain JSON.
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, context=context, timeout=TIMEOUT) as response:
        status = response.status
        content_type = response.headers.get("Content-Type")
        doc = json.loads(response.read().decode("utf-8"))
    endpoint = {
        "status": status,
        "content_type": content_type,
        "sequence": doc["spiffe_sequence"],
        "refresh_hint": doc["spiffe_refresh_hint"],
        "x509": sorted(
            hashlib.sha256(base64.b64decode(k["x5c"][0])).hexdigest()
            for k in doc["keys"]
            if k["use"] == "x509-svid"
        ),
        "kids": sorted(k["kid"] for k in doc["keys"] if k["use"] == "jwt-svid"),
    }
    print(json.dumps({"x509": x509_out, "jwt": jwt_out, "endpoint": endpoint}), flush=True)


if __name__ == "__main__":
    main()
