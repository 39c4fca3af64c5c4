"""A manifest that cannot be edited silently: its content digest is checked before anything loads, every
single-field edit of a real exported manifest is refused by the field's name, and a device given a verify key
runs only bundles signed by it."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from crossl_edge.runtime import BundleError, load_bundle
from crossl_edge.runtime.bundle import INTEGRITY, MANIFEST, VERIFY_KEY_ENV, read_manifest, write_manifest
from crossl_edge.runtime.signing import SigningError, keygen, load_signing_key, load_verify_key


def leaves(d, path=()):
    """(path, value) of every leaf of a JSON document; empty lists and dicts count as leaves."""
    if isinstance(d, dict) and d:
        for k, v in d.items():
            yield from leaves(v, path + (k,))
    elif isinstance(d, list) and d:
        for i, v in enumerate(d):
            yield from leaves(v, path + (i,))
    else:
        yield path, d


def edit(v):
    """A different value of the same kind."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return 0 if v != v else v + 1 if abs(v) < 1e6 else v * 2  # NaN -> 0; a huge float doubled, not + 1
    if isinstance(v, str):
        return v + "x"
    if v is None:
        return 0
    return [0] if isinstance(v, list) else {"x": 0}


def put(d, path, value):
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


@pytest.fixture()
def copy_of(tmp_path):
    def make(bundle: Path) -> Path:
        out = tmp_path / bundle.name
        out.mkdir()
        for f in bundle.iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        return out
    return make


@pytest.mark.parametrize("which", ["int8_bundle", "fp32_bundle"])  # unsigned, and signed (export --sign-key)
def test_every_single_field_edit_of_an_exported_manifest_is_refused_by_name(which, request, copy_of):
    bundle = request.getfixturevalue(which)
    bad = copy_of(bundle)
    original = read_manifest(bundle)
    load_bundle(bad)  # the copy itself is fine
    edits = 0
    for path, value in leaves(original):
        m = copy.deepcopy(original)
        put(m, path, edit(value))
        assert m != original, path
        (bad / MANIFEST).write_text(json.dumps(m, indent=1))
        try:
            load_bundle(bad)
            raise AssertionError(f"an edit of {path} was accepted")
        except BundleError as e:
            msg = str(e)
        assert str(bad / MANIFEST) in msg, (path, msg)
        if path[:2] == (INTEGRITY, "signature"):
            assert "signature record (field 'integrity.signature') was edited" in msg, (path, msg)
        elif path[0] == INTEGRITY:
            assert "integrity record" in msg, (path, msg)
        else:
            assert f"field {path[0]!r} changed" in msg, (path, msg)
        edits += 1
    for key in original:  # every field taken away, and one more added
        m = {k: v for k, v in original.items() if k != key}
        (bad / MANIFEST).write_text(json.dumps(m))
        with pytest.raises(BundleError, match="integrity record" if key == INTEGRITY else f"field '{key}' removed"):
            load_bundle(bad)
    (bad / MANIFEST).write_text(json.dumps({**original, "note": "mine"}))
    with pytest.raises(BundleError, match="field 'note' added"):
        load_bundle(bad)
    assert edits > 150, edits  # a real manifest: modalities, statistics, quantisation, I/O of every program, ...


def test_the_edits_the_issue_found_and_formatting_that_is_not_an_edit(int8_bundle, copy_of):
    bad = copy_of(int8_bundle)
    m = read_manifest(int8_bundle)
    m["normalization"]["mean"]["eda"][0] += 1.0  # moved held-out macro-F1 from 0.569 to 0.622, unseen
    (bad / MANIFEST).write_text(json.dumps(m, indent=1))
    with pytest.raises(BundleError, match=r"manifest.json was edited after it was written \(field 'normalization'"):
        load_bundle(bad)
    m = read_manifest(int8_bundle)
    m["hop_s"] = 2.5
    (bad / MANIFEST).write_text(json.dumps(m, indent=1))
    with pytest.raises(BundleError, match=r"field 'hop_s' changed"):
        load_bundle(bad)
    m = read_manifest(int8_bundle)  # indentation and key order are not content
    (bad / MANIFEST).write_text(json.dumps(m, indent=4, sort_keys=True))
    assert load_bundle(bad).manifest.digest == m[INTEGRITY]["sha256"]
    del m[INTEGRITY]  # a manifest from before sealing (or one whose record was cut out) is refused
    (bad / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="no valid integrity record .* re-export the bundle"):
        load_bundle(bad)


def test_a_device_with_a_verify_key_runs_only_what_that_key_signed(fp32_bundle, int8_bundle, signing_keys,
                                                                   copy_of, monkeypatch, tmp_path):
    (exporter_key, exporter_pub), (_, stranger_pub) = signing_keys["exporter"], signing_keys["stranger"]
    signed = read_manifest(fp32_bundle)[INTEGRITY]["signature"]  # export --sign-key
    assert signed["algorithm"] == "ed25519" and signed["public_key"] == exporter_pub.read_text().strip()
    load_bundle(fp32_bundle, verify_keys=[exporter_pub])
    load_bundle(fp32_bundle, verify_keys=[load_verify_key(stranger_pub), load_verify_key(exporter_pub)])  # any of them
    with pytest.raises(BundleError, match=rf"{fp32_bundle / MANIFEST} is signed by key .* does not trust"):
        load_bundle(fp32_bundle, verify_keys=[stranger_pub])
    with pytest.raises(BundleError, match=rf"{int8_bundle / MANIFEST} is not signed"):
        load_bundle(int8_bundle, verify_keys=[exporter_pub])
    monkeypatch.setenv(VERIFY_KEY_ENV, str(stranger_pub))  # a device's standing policy, for every command
    with pytest.raises(BundleError, match="does not trust"):
        load_bundle(fp32_bundle)
    load_bundle(int8_bundle, verify_keys=[])  # an explicit empty list is no policy
    monkeypatch.delenv(VERIFY_KEY_ENV)
    # an edit re-digested by hand, the old signature kept, is still refused: the signature does not cover it
    bad = copy_of(fp32_bundle)
    m = read_manifest(fp32_bundle)
    signature = m[INTEGRITY]["signature"]
    m["hop_s"] = 2.5
    write_manifest(bad, m)
    sealed = read_manifest(bad)
    sealed[INTEGRITY]["signature"] = signature
    (bad / MANIFEST).write_text(json.dumps(sealed))
    with pytest.raises(BundleError, match=r"signature record \(field 'integrity.signature'\) was edited or does not match"):
        load_bundle(bad)  # the digest is satisfied, the signature (checked against its own key) is not
    write_manifest(bad, read_manifest(fp32_bundle), load_signing_key(exporter_key))  # signed again: fine again
    load_bundle(bad, verify_keys=[exporter_pub])


def test_run_checks_its_verify_key_before_it_streams(fp32_bundle, signing_keys, capsys):
    from crossl_edge import run

    assert run.main(["--bundle", str(fp32_bundle), "--source", "replay:stress-predict:S04", "--duration", "1",
                     "--verify-key", str(signing_keys["stranger"][1]), "--quiet"]) == 2
    assert "which this device does not trust" in capsys.readouterr().err


def test_keys_and_their_errors(tmp_path, run_dir, capsys, monkeypatch):
    from crossl_edge import export

    key, pub = keygen(tmp_path / "k")
    assert (key.stat().st_mode & 0o777) == 0o600 and len(pub.read_text().strip()) == 64
    with pytest.raises(SigningError, match="never overwritten"):
        keygen(tmp_path / "k")
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(SigningError, match=rf"{tmp_path / 'bad.key'} is not an Ed25519 signing key file"):
        load_signing_key(tmp_path / "bad.key")
    # export refuses a bad key before it spends minutes lowering programs
    assert export.main(["--run", str(run_dir), "--sign-key", str(tmp_path / "bad.key"), "--quiet"]) == 2
    assert "bad.key is not an Ed25519 signing key file" in capsys.readouterr().err
    # without PyNaCl, digests still work and signatures say what to install
    monkeypatch.setitem(sys.modules, "nacl", None)
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    with pytest.raises(SigningError, match=r"needs PyNaCl: pip install '.\[signing\]'"):
        load_verify_key(pub)
