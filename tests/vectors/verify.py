#!/usr/bin/python3
"""An independent reader of the library's formats, written from
docs/formats.md alone (sections 1 and 2), run by `make check` over the test
vectors beside it.

    tests/vectors/verify.py [DIR]

Needs Debian's python3-nacl (PyNaCl) for XChaCha20-Poly1305; BLAKE2b comes
from hashlib. Prints one line per file and exits non-zero on any mismatch.
"""
import base64
import hashlib
import json
import os
import sys

from nacl import bindings
from nacl.exceptions import CryptoError


def u32be(n):
    return n.to_bytes(4, "big")


def u64be_signed(n):
    # two's complement of the int64, big-endian (formats.md 1.4)
    if not -(2**63) <= n < 2**63:
        raise ValueError("owner_id outside int64")
    return (n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def part(text):
    b = text.encode("utf-8")
    if len(b) > 4096 or b"\0" in b:
        raise ValueError("a part is limited to 4096 bytes without NUL")
    return u32be(len(b)) + b


def associated_data(header, table, field, owner_id, scope):
    if not table or not field:
        raise ValueError("table and field must not be empty")
    ad = header + part(table) + part(field) + u64be_signed(owner_id)
    if scope is None:
        return ad + b"\x00"
    return ad + b"\x01" + part(scope)


KID_CHARS = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def parse_envelope(env):
    """(header, key id, nonce, ciphertext with tag) or ValueError."""
    if len(env) < 2 or env[0] != 1:
        raise ValueError("not a version 1 envelope")
    n = env[1]
    if not 1 <= n <= 32 or len(env) < 42 + n:
        raise ValueError("bad key id length or short envelope")
    kid = env[2 : 2 + n]
    if not set(kid) <= KID_CHARS:
        raise ValueError("bad key id character")
    return env[: 2 + n], kid.decode("ascii"), env[2 + n : 26 + n], env[26 + n :]


def open_envelope(ring, env, table, field, owner_id, scope):
    header, kid, nonce, box = parse_envelope(env)
    key = ring[kid]  # the ring key as it is: no derivation (formats.md 1.1)
    ad = associated_data(header, table, field, owner_id, scope)
    return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(box, ad, nonce, key)


def seal_envelope(kid, key, nonce, plaintext, table, field, owner_id, scope):
    kb = kid.encode("ascii")
    header = bytes([1, len(kb)]) + kb
    ad = associated_data(header, table, field, owner_id, scope)
    box = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)
    return header + nonce + box


def fails_to_open(ring, env, table, field, owner_id, scope):
    try:
        open_envelope(ring, env, table, field, owner_id, scope)
    except (CryptoError, ValueError, KeyError):
        return True
    return False


def check_envelopes(path):
    vectors = json.load(open(path, encoding="utf-8"))
    problems = []
    seen = {"null_scope": 0, "empty_scope": 0, "kids": set()}
    for i, v in enumerate(vectors):
        key = base64.b64decode(v["key"], validate=True)
        env = base64.b64decode(v["envelope"], validate=True)
        owner = int(v["owner_id"])
        scope = v["scope"]
        ring = {v["key_id"]: key}
        place = (v["table"], v["field"], owner, scope)
        want = v["plaintext"].encode("utf-8")
        seen["kids"].add(v["key_id"])
        seen["null_scope"] += scope is None
        seen["empty_scope"] += scope == ""
        try:
            got = open_envelope(ring, env, *place)
        except (CryptoError, ValueError, KeyError) as e:
            problems.append(f"vector {i}: does not open: {e!r}")
            continue
        if got != want:
            problems.append(f"vector {i}: opens to other bytes")
        if len(env) != 42 + len(v["key_id"]) + len(want):
            problems.append(f"vector {i}: length is not 42 + n + plaintext")
        # same nonce, same place: the same bytes (layout and AD exactly)
        nonce = env[2 + len(v["key_id"]) : 26 + len(v["key_id"])]
        if seal_envelope(v["key_id"], key, nonce, want, *place) != env:
            problems.append(f"vector {i}: re-encryption differs")
        # every part of the place is bound
        others = [
            (v["table"] + "x", v["field"], owner, scope),
            (v["table"], v["field"] + "x", owner, scope),
            (v["table"], v["field"], owner + 1 if owner < 2**63 - 1 else owner - 1, scope),
            (v["table"], v["field"], owner, None if scope is not None else ""),
        ]
        for other in others:
            if not fails_to_open(ring, env, *other):
                problems.append(f"vector {i}: opens for another place {other[:3]}")
        tampered = bytearray(env)
        tampered[-1] ^= 1
        if not fails_to_open(ring, bytes(tampered), *place):
            problems.append(f"vector {i}: a tampered tag opens")
    if seen["null_scope"] == 0 or seen["empty_scope"] == 0 or len(seen["kids"]) < 2:
        problems.append("the vectors miss NULL or empty scopes or several key ids")
    return len(vectors), problems


def kdf_subkey(ring_key, subkey_id, context):
    # crypto_kdf_derive_from_key as formats.md 2.2 spells it
    salt = subkey_id.to_bytes(8, "little") + bytes(8)
    person = context + bytes(16 - len(context))
    return hashlib.blake2b(b"", digest_size=32, key=ring_key, salt=salt, person=person).digest()


def b64url_nopad(s):
    if len(s) != 43 or "=" in s:
        raise ValueError("a token is 43 base64url characters")
    return base64.urlsafe_b64decode(s + "=")


def check_session_hashes(path):
    vectors = json.load(open(path, encoding="utf-8"))
    problems = []
    for i, v in enumerate(vectors):
        key = base64.b64decode(v["key"], validate=True)
        raw = b64url_nopad(v["token"])
        if len(raw) != 32:
            problems.append(f"vector {i}: the token is not 32 bytes")
            continue
        subkey = kdf_subkey(key, 1, b"dssessn1")
        h = hashlib.blake2b(raw, digest_size=32, key=subkey).hexdigest()
        if h != v["hash"]:
            problems.append(f"vector {i}: token hash differs")
        seal = hashlib.blake2b(b"datastore session cache details v1",
                               digest_size=32, key=raw).hexdigest()
        if seal != v["cache_seal_key"]:
            problems.append(f"vector {i}: cache seal key differs")
        # a sealed copy of section 2.3 opens with that key and no other
        sk = bytes.fromhex(seal)
        nonce = bytes(range(24))
        details = json.dumps({"ua": "agent", "ip": "192.0.2.1"}).encode()
        box = bindings.crypto_secretbox(details, nonce, sk)
        if bindings.crypto_secretbox_open(box, nonce, sk) != details:
            problems.append(f"vector {i}: secretbox round trip failed")
    return len(vectors), problems


def main():
    here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    failed = False
    for name, check in (("token_envelope.json", check_envelopes),
                        ("session_token_hash.json", check_session_hashes)):
        count, problems = check(os.path.join(here, name))
        for p in problems:
            print(f"{name}: {p}")
        failed |= bool(problems) or count == 0
        print(f"{name}: {count} vectors, {'FAILED' if problems or not count else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
