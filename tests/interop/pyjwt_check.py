"""A JWT-SVID checked the way a generic OpenID Connect relying party checks
an ID token, with PyJWT (pinned in requirements.txt) and nothing of ours.

Usage: pyjwt_check.py ISSUER TOKEN AUDIENCE

Fetches ISSUER/.well-known/openid-configuration with urllib, builds a
jwt.PyJWKClient on the jwks_uri it names, validates TOKEN for AUDIENCE and
ISSUER, then checks that PyJWT refuses the same token with an altered
signature, for another audience, for another issuer, and re-signed by a key
the JWKS does not hold. Prints one JSON line per step (tests/e2e/oidc_pyjwt.rs
reads them); any surprise is an exception and a non-zero exit.
"""

import base64
import json
import sys
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response), response.headers.get("Content-Type")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(token, key, algorithms, audience, issuer):
    """The name of the exception PyJWT raises for TOKEN, or None if it accepts it."""
    try:
        jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=issuer)
    except jwt.PyJWTError as error:
        return type(error).__name__
    return None


def main():
    issuer, token, audience = sys.argv[1:4]

    discovery, discovery_type = fetch_json(issuer + "/.well-known/openid-configuration")
    jwks, jwks_type = fetch_json(discovery["jwks_uri"])
    emit(
        "discovery",
        issuer=discovery["issuer"],
        jwks_uri=discovery["jwks_uri"],
        algorithms=discovery["id_token_signing_alg_values_supported"],
        discovery_type=discovery_type,
        jwks_type=jwks_type,
        kids=[k.get("kid") for k in jwks["keys"]],
    )

    client = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)
    signing_key = client.get_signing_key_from_jwt(token)
    algorithms = discovery["id_token_signing_alg_values_supported"]
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=algorithms,
        audience=audience,
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "iss", "sub", "aud"]},
    )
    emit(
        "valid",
        kid=signing_key.key_id,
        alg=signing_key.algorithm_name,
        sub=claims["sub"],
        iss=claims["iss"],
        aud=claims["aud"],
    )

    header, body, signature = token.split(".")
    altered = bytearray(b64url_decode(signature))
    altered[len(altered) // 2] ^= 0x01
    tampered = ".".join([header, body, b64url_encode(bytes(altered))])

    # The same claims and kid, signed by a key the JWKS does not hold.
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        json.loads(b64url_decode(body)),
        forger,
        algorithm="ES256",
        headers={"kid": signing_key.key_id},
    )

    emit(
        "refused",
        altered_signature=refused(tampered, signing_key.key, algorithms, audience, issuer),
        wrong_audience=refused(token, signing_key.key, algorithms, "someone-else", issuer),
        wrong_issuer=refused(token, signing_key.key, algorithms, audience, issuer + "/other"),
        forged=refused(
            forged,
            client.get_signing_key_from_jwt(forged).key,
            algorithms,
            audience,
            issuer,
        ),
    )


if __name__ == "__main__":
    main()
