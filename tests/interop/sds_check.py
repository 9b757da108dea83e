"""Envoy's secret discovery service (SDS v3), as an Envoy asks it, against a
real Hallmark agent: grpcio with Envoy's own API definitions as the
`xds-protos` package generates them (PyPI), not Hallmark's.

Run by tests/e2e/sds.rs as an attested workload (its app tree is bound by
two gold images, alpha and beta). Prints one JSON object per line:
  fetched   FetchSecrets for the default SVID and bundle
  secrets   each StreamSecrets response (after which an ACK is sent)
  ended     the stream ended (its gRPC error)
Arguments: the SPIFFE IDs alpha and beta (unused but for the log).
Environment: SPIFFE_ENDPOINT_SOCKET=unix:/path/to/agent.sock.
"""

import json
import os
import queue
import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
NODE = base_pb2.Node(id="sidecar~127.0.0.1~test~default", cluster="interop")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def spiffe_ids(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def describe(response):
    """What a response holds, checked the way Envoy would use it."""
    secrets = {}
    for any_ in response.resources:
        assert any_.type_url == SECRET, any_.type_url
        secret = secret_pb2.Secret()
        assert any_.Unpack(secret)
        kind = secret.WhichOneof("type")
        if kind == "tls_certificate":
            chain = x509.load_pem_x509_certificates(
                secret.tls_certificate.certificate_chain.inline_bytes
            )
            key = serialization.load_pem_private_key(
                secret.tls_certificate.private_key.inline_bytes, password=None
            )
            # The key is the leaf's.
            leaf_public = chain[0].public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            key_public = key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            secrets[secret.name] = {
                "kind": kind,
                "ids": spiffe_ids(chain[0]),
                "chain": len(chain),
                "key_matches": leaf_public == key_public,
                "leaf": chain[0].fingerprint(chain[0].signature_hash_algorithm).hex(),
                "issuer": chain[-1].issuer.rfc4514_string(),
            }
        elif kind == "validation_context":
            cas = x509.load_pem_x509_certificates(
                secret.validation_context.trusted_ca.inline_bytes
            )
            secrets[secret.name] = {
                "kind": kind,
                "cas": len(cas),
                "subjects": [ca.subject.rfc4514_string() for ca in cas],
            }
        else:
            secrets[secret.name] = {"kind": kind}
    return {
        "type_url": response.type_url,
        "version": response.version_info,
        "nonce": response.nonce,
        "secrets": secrets,
    }


def request(names, version="", nonce=""):
    return discovery_pb2.DiscoveryRequest(
        node=NODE,
        type_url=SECRET,
        resource_names=names,
        version_info=version,
        response_nonce=nonce,
    )


def main():
    socket = os.environ["SPIFFE_ENDPOINT_SOCKET"]
    channel = grpc.insecure_channel(socket)
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)

    fetched = stub.FetchSecrets(request(["default", "ROOTCA"]), timeout=60)
    emit("fetched", **describe(fetched))

    requests = queue.Queue()

    def feed():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    requests.put(request(["default", "ROOTCA"]))
    stream = stub.StreamSecrets(feed())
    names = ["default", "ROOTCA"]
    try:
        for response in stream:
            emit("secrets", **describe(response))
            # ACK, as Envoy does; with the first, also ask for beta's SVID
            # by its SPIFFE ID: a response with it must follow.
            names = ["default", "ROOTCA", sys.argv[2]]
            requests.put(request(names, response.version_info, response.nonce))
    except grpc.RpcError as error:
        emit("ended", error=f"{error.code().name}: {error.details()}")
    finally:
        requests.put(None)
    channel.close()


if __name__ == "__main__":
    main()
