"""py-spiffe (the `spiffe` package, on grpcio) against a Hallmark agent.

Run by tests/e2e/py_spiffe.rs with the venv of tests/interop/setup-venv.sh:

    SPIFFE_ENDPOINT_SOCKET=unix:/path/to/agent.sock \
        target/interop-venv/bin/python tests/interop/py_spiffe_check.py \
        spiffe://example.org/alpha spiffe://example.org/beta

The first ID must bind a model (its SVID is the one the test kills first).
Every call goes through py-spiffe's own WorkloadApiClient, unmodified, so
grpcio sends its own HTTP/2 `:authority` for the Unix socket (the
percent-encoded socket path).

Prints one JSON object per line on stdout; the Rust test reads them and
drives the kills:

    {"event": "fetched", ...}           every unary call checked
    {"event": "context", "ids": [...]}  each message of the watched stream
    {"event": "ended", "error": "..."}  the watched stream's end
    {"event": "refused", "error": "..."} a fresh fetch after the end

Any unexpected error, or a check that does not hold, exits non-zero with
the reason on stderr: nothing here is allowed to fail quietly.
"""

import json
import queue
import sys

from cryptography.hazmat.primitives import serialization
from spiffe import JwtSvid, SpiffeId, WorkloadApiClient
from spiffe.svid.errors import JwtSvidError
from spiffe.workloadapi.errors import FetchX509SvidError

AUDIENCE = "payments"
# Unary calls and each wait for a stream message: long enough for a loaded
# CI machine, short enough to turn a hang into a failure.
TIMEOUT = 30.0


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def public_der(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_svid(svid, authorities):
    """The key is the certificate's, and an authority of the bundle signed
    the chain's top (cryptography checks the signature, not us)."""
    check(
        public_der(svid.private_key.public_key()) == public_der(svid.leaf.public_key()),
        f"{svid.spiffe_id}: the private key does not match the certificate",
    )
    chain = svid.cert_chain
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    top = chain[-1]
    for authority in authorities:
        try:
            top.verify_directly_issued_by(authority)
            return
        except Exception:  # noqa: BLE001 - try the next authority
            continue
    raise AssertionError(f"{svid.spiffe_id}: no bundle authority signed the chain")


def fetch_all(client, ids, td):
    svids = client.fetch_x509_svids()
    fetched = sorted(str(s.spiffe_id) for s in svids)
    check(fetched == sorted(ids), f"X.509-SVIDs {fetched}, expected {sorted(ids)}")

    bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(td)
    check(bundle is not None, f"FetchX509Bundles has no bundle for {td}")
    authorities = bundle.x509_authorities
    check(len(authorities) > 0, "the X.509 bundle has no authority")
    for svid in svids:
        check_svid(svid, authorities)

    context = client.fetch_x509_context()
    check(
        str(context.default_svid.spiffe_id) in ids,
        f"default SVID {context.default_svid.spiffe_id}",
    )
    context_bundle = context.x509_bundle_set.get_bundle_for_trust_domain(td)
    check(
        context_bundle is not None and context_bundle.x509_authorities == authorities,
        "the X.509 context's bundle differs from FetchX509Bundles",
    )

    subject = SpiffeId(ids[0])
    jwt = client.fetch_jwt_svid({AUDIENCE}, subject)
    check(str(jwt.spiffe_id) == ids[0], f"JWT-SVID subject {jwt.spiffe_id}")
    check(jwt.audience == {AUDIENCE}, f"JWT-SVID audience {jwt.audience}")
    jwt_bundles = client.fetch_jwt_bundles()
    jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(td)
    check(jwt_bundle is not None, f"FetchJWTBundles has no bundle for {td}")
    check(len(jwt_bundle.jwt_authorities) > 0, "the JWT bundle has no authority")
    # Offline validation with py-spiffe's own code (PyJWT underneath).
    validated = JwtSvid.parse_and_validate(jwt.token, jwt_bundle, {AUDIENCE})
    check(str(validated.spiffe_id) == ids[0], f"validated subject {validated.spiffe_id}")
    try:
        JwtSvid.parse_and_validate(jwt.token, jwt_bundle, {"someone-else"})
    except JwtSvidError:
        pass
    else:
        raise AssertionError("a JWT-SVID validated for an audience it was not minted for")
    # And by the agent (ValidateJWTSVID).
    by_agent = client.validate_jwt_svid(jwt.token, AUDIENCE)
    check(str(by_agent.spiffe_id) == ids[0], f"ValidateJWTSVID subject {by_agent.spiffe_id}")

    emit(
        "fetched",
        x509_ids=fetched,
        x509_authorities=len(authorities),
        jwt_sub=str(validated.spiffe_id),
        jwt_authorities=sorted(jwt_bundle.jwt_authorities.keys()),
    )


def watch(client, td):
    """Streams X.509 contexts until the stream ends, reporting each message;
    the test kills identities in between."""
    events = queue.Queue()
    # retry_connect=False: the end of the stream (PermissionDenied once no
    # identity is left) is reported to on_error instead of retried forever.
    handler = client.stream_x509_contexts(
        on_success=lambda context: events.put(("context", context)),
        on_error=lambda error: events.put(("error", error)),
        retry_connect=False,
    )
    try:
        while True:
            try:
                kind, value = events.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no stream event in {TIMEOUT} s") from None
            if kind == "error":
                emit("ended", error=str(value))
                return
            bundle = value.x509_bundle_set.get_bundle_for_trust_domain(td)
            check(bundle is not None, f"a streamed context has no bundle for {td}")
            for svid in value.x509_svids:
                check_svid(svid, bundle.x509_authorities)
            emit("context", ids=sorted(str(s.spiffe_id) for s in value.x509_svids))
    finally:
        handler.cancel()


def main():
    ids = sys.argv[1:]
    check(len(ids) >= 1, "usage: py_spiffe_check.py SPIFFE_ID...")
    td = SpiffeId(ids[0]).trust_domain
    # The socket comes from SPIFFE_ENDPOINT_SOCKET, as for any workload.
    client = WorkloadApiClient(default_timeout=TIMEOUT)
    try:
        fetch_all(client, ids, td)
        watch(client, td)
        try:
            svids = client.fetch_x509_svids()
        except FetchX509SvidError as error:
            emit("refused", error=str(error))
        else:
            raise AssertionError(
                f"fetched {[str(s.spiffe_id) for s in svids]} after the stream ended"
            )
    finally:
        client.close()


if __name__ == "__main__":
    main()
