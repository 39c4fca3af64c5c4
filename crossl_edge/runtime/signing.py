"""Signed bundles for deployments: Ed25519 through PyNaCl (the `signing` extra; wheels for x86_64 and for a
Raspberry Pi's aarch64, no torch).

Whoever exports holds a signing key and signs each manifest's content (`export --sign-key NAME.key`); a device
holds only the verify key (`run --verify-key NAME.pub`, or $CROSSL_EDGE_VERIFY_KEY for every command) and then
refuses any bundle whose manifest is not signed by a key it trusts. The manifest lists the sha256 of every
program file (and of a personalised head), so its signature covers the whole bundle.

    python -m crossl_edge.runtime.signing keygen keys/exporter   # writes keys/exporter.key (secret) and .pub

A key file holds the key's 32 bytes as hex on one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from crossl_edge.runtime.bundle import VERIFY_KEY_ENV, BundleError

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey

ALGORITHM = "ed25519"
INSTALL = "pip install '.[signing]' (PyNaCl)"


class SigningError(BundleError):
    """A key file is unreadable, or PyNaCl (needed to sign or to check signatures) is not installed."""


def _nacl():
    try:
        import nacl.exceptions
        import nacl.signing
    except ImportError as e:
        raise SigningError(f"signing and checking signatures needs PyNaCl: {INSTALL}") from e
    return nacl.signing, nacl.exceptions


def _key_bytes(path: Path, what: str) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise SigningError(f"{what} file {path} cannot be read: {e.strerror or e}") from e
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SigningError(f"{path} is not an Ed25519 {what} file (one line of 64 hex digits); make a pair with "
                           "`python -m crossl_edge.runtime.signing keygen NAME`")
    return raw


def load_signing_key(path: str | Path) -> "SigningKey":
    signing, _ = _nacl()
    return signing.SigningKey(_key_bytes(Path(path), "signing key"))


def load_verify_key(path: str | Path) -> "VerifyKey":
    signing, _ = _nacl()
    return signing.VerifyKey(_key_bytes(Path(path), "verify key"))


def key_id(key: "VerifyKey") -> str:
    return bytes(key).hex()[:16]


def sign(content: bytes, key: "SigningKey") -> dict[str, Any]:
    """The manifest's signature record: algorithm, the signer's verify key, and the signature of `content`."""
    return {"algorithm": ALGORITHM, "public_key": bytes(key.verify_key).hex(), "value": key.sign(content).signature.hex()}


def verify(content: bytes, record: Any, keys: Sequence["VerifyKey"], where: Path) -> "VerifyKey":
    """The trusted key that signed `content`; BundleError naming the manifest if none did."""
    _, exceptions = _nacl()
    trusted = ", ".join(key_id(k) for k in keys)
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
        raise BundleError(f"{where} is not signed ({ALGORITHM}), and this device only runs bundles signed by a key "
                          f"it trusts ({trusted}); export it with --sign-key")
    by = str(record.get("public_key", ""))
    try:
        signature = bytes.fromhex(str(record.get("value", "")))
    except ValueError:
        signature = b""
    for k in keys:
        if bytes(k).hex() == by:
            try:
                k.verify(content, signature)
                return k
            except (exceptions.BadSignatureError, ValueError, TypeError) as e:
                raise BundleError(f"{where}: its signature by key {by[:16]} does not verify: the manifest (or "
                                  "the signature) was changed after it was signed") from e
    raise BundleError(f"{where} is signed by key {by[:16] or '?'}, which this device does not trust (it trusts "
                      f"{trusted})")


def check_record(content: bytes, record: Any, where: Path) -> None:
    """A signature record must be whole and, where PyNaCl is installed, verify with the key it names: an edited
    signature is refused like any other edit of the manifest. (Whether that key is trusted is `verify`'s job.)"""
    ok = (isinstance(record, dict) and set(record) == {"algorithm", "public_key", "value"}
          and record["algorithm"] == ALGORITHM and _is_hex(record["public_key"], 32) and _is_hex(record["value"], 64))
    if ok:
        try:
            signing, exceptions = _nacl()
        except SigningError:
            return  # no PyNaCl here: the record is well formed, and nothing here trusts signatures anyway
        try:
            signing.VerifyKey(bytes.fromhex(record["public_key"])).verify(content, bytes.fromhex(record["value"]))
            return
        except (exceptions.BadSignatureError, ValueError, TypeError):
            pass
    raise BundleError(f"{where}: its signature record (field 'integrity.signature') was edited or does not match the "
                      "manifest; re-export (or re-copy) the bundle")


def _is_hex(v: Any, n: int) -> bool:
    try:
        return isinstance(v, str) and len(bytes.fromhex(v)) == n
    except ValueError:
        return False


def keygen(name: str | Path) -> tuple[Path, Path]:
    """Write a new key pair: NAME.key (the signing key, readable by its owner only) and NAME.pub."""
    signing, _ = _nacl()
    secret, public = Path(f"{name}.key"), Path(f"{name}.pub")
    for f in (secret, public):
        if f.exists():
            raise SigningError(f"{f} exists; a key is never overwritten (choose another name)")
    secret.parent.mkdir(parents=True, exist_ok=True)
    key = signing.SigningKey.generate()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    public.write_text(bytes(key.verify_key).hex() + "\n")
    return secret, public


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crossl_edge.runtime.signing", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write NAME.key (keep it with whoever exports) and NAME.pub (for the devices)")
    k.add_argument("name", help="path and name of the pair, without extension, e.g. keys/exporter")
    args = p.parse_args(argv)
    try:
        secret, public = keygen(args.name)
    except SigningError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"signing key {secret} (keep it secret, with whoever exports: export --sign-key {secret})")
    print(f"verify key {public} (key {public.read_text().strip()[:16]}; on each device: run --verify-key {public}, "
          f"or {VERIFY_KEY_ENV}={public})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
