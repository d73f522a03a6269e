#!/usr/bin/env python3
"""Mint an Otter room token (HS256 JWT) on your application's server, after you have decided
that this user may enter this room. Python 3 standard library only.

    from mint import room_token
    token = room_token(os.environ["OTTER_TOKEN_SECRET"], "consult-42", name="Dr. Who", sub=user.id)

With PyJWT installed, the same is:
    jwt.encode({"room": room, "exp": int(time.time()) + ttl, "name": name}, secret, algorithm="HS256")

Command line: OTTER_TOKEN_SECRET=... python3 mint.py ROOM [NAME] [TTL_SECONDS]
"""
import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def room_token(secret: str, room: str, ttl: int = 300, name: str | None = None, sub: str | None = None) -> str:
    """A token admitting to `room` for `ttl` seconds (checked at join only; a few minutes is plenty)."""
    if not secret:
        raise ValueError("no token secret")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", room):
        raise ValueError("room: 1-64 of A-Z a-z 0-9 _ -")
    claims = {"room": room, "exp": int(time.time()) + ttl}
    if name:
        claims["name"] = name
    if sub:
        claims["sub"] = sub
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    body = f"{header}.{payload}"
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64url(signature)}"


if __name__ == "__main__":
    secret = os.environ.get("OTTER_TOKEN_SECRET", "")
    if len(sys.argv) < 2 or not secret:
        print("usage: OTTER_TOKEN_SECRET=... python3 mint.py ROOM [NAME] [TTL_SECONDS]", file=sys.stderr)
        sys.exit(2)
    args = sys.argv[1:]
    print(room_token(secret, args[0], name=args[1] if len(args) > 1 else None, ttl=int(args[2]) if len(args) > 2 else 300))
