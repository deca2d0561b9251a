"""What a job does with the identity the proxy sent: verify the assertion with PyJWT.

Usage: verify_identity.py JWKS TOKEN AUDIENCE

JWKS is the document's JSON, or a Cypress path (`//...`) read with the YTsaurus Python client
as a job would (YT_PROXY and YT_TOKEN from the environment).

Prints one JSON object: the verified claims and key id, and how PyJWT answered three forgeries
(the same claims signed by another key under the proxy's kid; a claim changed after signing;
the token presented to another service). Exits non-zero if the real token does not verify.
"""

import base64
import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def verify(token, keys, audience):
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(
        token,
        keys[kid].key,
        algorithms=["ES256"],
        audience=audience,
        issuer="ytsaurus-task-proxy",
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )


def outcome(token, keys, audience):
    try:
        verify(token, keys, audience)
        return "accepted"
    except jwt.PyJWTError as error:
        return "rejected: " + type(error).__name__


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_jwks(source):
    if source.startswith("//"):
        import yt.wrapper

        # YSON strings come back as str subclasses: round-trip through JSON for plain types.
        return json.loads(json.dumps(yt.wrapper.get(source)))
    return json.loads(source)


def main():
    jwks, token, audience = sys.argv[1], sys.argv[2], sys.argv[3]
    keys = {k["kid"]: jwt.PyJWK(k) for k in load_jwks(jwks)["keys"]}
    claims = verify(token, keys, audience)
    kid = jwt.get_unverified_header(token)["kid"]

    other_key = ec.generate_private_key(ec.SECP256R1())
    foreign = jwt.encode(claims, other_key, algorithm="ES256", headers={"kid": kid})

    header, payload, signature = token.split(".")
    changed = dict(claims, sub="root", login="root")
    tampered = ".".join([header, b64(json.dumps(changed).encode()), signature])

    print(
        json.dumps(
            {
                "claims": claims,
                "kid": kid,
                "foreign_key": outcome(foreign, keys, audience),
                "tampered": outcome(tampered, keys, audience),
                "other_service": outcome(token, keys, "other." + audience),
            }
        )
    )


if __name__ == "__main__":
    main()
