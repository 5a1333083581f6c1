"""``wgtlab keygen`` and ``wgtlab ces encode | decode | inspect``, through wgtlab.cli.main."""

from __future__ import annotations

import os

import pytest

from wgtlab.cli import main

KEY_HEX = bytes(range(32)).hex()


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("CES_ENCRYPTION_KEY", KEY_HEX)
    monkeypatch.delenv("CES_MASTER_SECRET", raising=False)


@pytest.fixture
def source(tmp_path):
    data = b"year,month,carrier\n" + b"2013,1,UA\n2013,1,AA\n" * 20_000 + os.urandom(5000)
    path = tmp_path / "flights.csv"
    path.write_bytes(data)
    return path


def test_keygen_prints_a_fresh_hex_key(capsys):
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(first) == 64 and bytes.fromhex(first) and first != second


def test_encode_inspect_decode(keyed, source, tmp_path, capsys):
    shards = tmp_path / "shards"
    assert (
        main(
            [
                "ces",
                "encode",
                str(source),
                "-o",
                str(shards),
                "--data-shards",
                "5",
                "--parity-shards",
                "3",
                "--level",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "8 shards" in out and "any 5 rebuild it" in out
    assert sorted(p.name for p in shards.iterdir())[-1] == "shard-007.ces"
    for i in (0, 4, 6):
        (shards / f"shard-{i:03d}.ces").unlink()

    assert main(["ces", "inspect", str(shards)]) == 0
    out = capsys.readouterr().out
    assert "5 data + 3 parity" in out and "zstd level 6" in out
    assert "recoverable: 5 usable, 5 needed" in out
    assert out.count("missing (file not found)") == 3
    assert f"original size   {source.stat().st_size} bytes" in out

    rebuilt = tmp_path / "rebuilt.csv"
    assert main(["ces", "decode", str(shards), "-o", str(rebuilt)]) == 0
    assert rebuilt.read_bytes() == source.read_bytes()


def test_inspect_reports_unrecoverable_sets_with_status_1(keyed, source, tmp_path, capsys):
    shards = tmp_path / "shards"
    main(["ces", "encode", str(source), "-o", str(shards)])
    for i in range(5):
        (shards / f"shard-{i:03d}.ces").unlink()
    capsys.readouterr()
    assert main(["ces", "inspect", str(shards)]) == 1
    assert "NOT recoverable: 7 usable, 8 needed" in capsys.readouterr().out
    assert main(["ces", "decode", str(shards), "-o", str(tmp_path / "x")]) == 1
    assert "NotEnoughShardsError" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_encode_refuses_to_run_without_a_key(monkeypatch, source, tmp_path, capsys):
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "KeyConfigError" in err and "CES_ENCRYPTION_KEY" in err and "wgtlab keygen" in err
    assert not (tmp_path / "s").exists()


def test_malformed_key_variable_is_named_not_echoed(monkeypatch, source, tmp_path, capsys):
    monkeypatch.setenv("CES_ENCRYPTION_KEY", "deadbeef" * 7)
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "CES_ENCRYPTION_KEY" in err and "56 characters" in err and "deadbeef" not in err


def test_wrong_key_on_decode(keyed, source, tmp_path, monkeypatch, capsys):
    main(["ces", "encode", str(source), "-o", str(tmp_path / "s")])
    monkeypatch.setenv("CES_ENCRYPTION_KEY", "ab" * 32)
    assert main(["ces", "decode", str(tmp_path / "s"), "-o", str(tmp_path / "out")]) == 1
    assert "KeyMismatchError" in capsys.readouterr().err


def test_key_file_and_tenant_keys(monkeypatch, source, tmp_path, capsys):
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    key_file = tmp_path / "key.hex"
    key_file.write_text(KEY_HEX + "\n")
    assert (
        main(["ces", "encode", str(source), "-o", str(tmp_path / "a"), "--key-file", str(key_file)])
        == 0
    )
    assert (
        main(
            [
                "ces",
                "decode",
                str(tmp_path / "a"),
                "-o",
                str(tmp_path / "a.csv"),
                "--key-file",
                str(key_file),
            ]
        )
        == 0
    )
    assert (tmp_path / "a.csv").read_bytes() == source.read_bytes()

    monkeypatch.setenv("CES_MASTER_SECRET", os.urandom(32).hex())
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "t"), "--tenant", "acme"]) == 0
    assert (
        main(
            [
                "ces",
                "decode",
                str(tmp_path / "t"),
                "-o",
                str(tmp_path / "t.csv"),
                "--tenant",
                "globex",
            ]
        )
        == 1
    )
    assert "KeyMismatchError" in capsys.readouterr().err
    assert (
        main(
            [
                "ces",
                "decode",
                str(tmp_path / "t"),
                "-o",
                str(tmp_path / "t.csv"),
                "--tenant",
                "acme",
            ]
        )
        == 0
    )
    assert (tmp_path / "t.csv").read_bytes() == source.read_bytes()


def test_encode_will_not_overwrite_without_force(keyed, source, tmp_path, capsys):
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 0
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s"), "--force"]) == 0


def test_inspect_without_key_still_finds_rot(monkeypatch, keyed, source, tmp_path, capsys):
    main(["ces", "encode", str(source), "-o", str(tmp_path / "s")])
    path = tmp_path / "s" / "shard-002.ces"
    raw = bytearray(path.read_bytes())
    raw[200] ^= 1
    path.write_bytes(bytes(raw))
    monkeypatch.delenv("CES_ENCRYPTION_KEY")
    capsys.readouterr()
    assert main(["ces", "inspect", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "header MACs not checked" in out and "damaged" in out


def test_decode_into_a_missing_directory_is_one_typed_line(
    keyed, source, tmp_path, monkeypatch, capsys
):
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    monkeypatch.chdir(tmp_path)
    assert main(["ces", "decode", "s", "-o", "missing/dir/file"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "wgtlab ces: ConfigError: cannot write the rebuilt data to 'missing/dir/file': its "
        "directory 'missing/dir' does not exist; create that directory first, or choose an "
        "output path in an existing one\n"
    )
    assert KEY_HEX not in err
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} == before


def _tree(root) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def test_decode_into_a_directory_is_refused_before_decoding(keyed, source, tmp_path, capsys):
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 0
    (tmp_path / "od").mkdir()
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main(["ces", "decode", str(tmp_path / "s"), "-o", str(tmp_path / "od")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab ces: ConfigError: cannot write the rebuilt data to {str(tmp_path / 'od')!r}: "
        "it is a directory; give a file path (e.g. a file inside that directory)\n"
    )
    assert _tree(tmp_path) == before  # no od/od.partial, no od/od


def test_decode_refuses_an_existing_file_without_force(keyed, source, tmp_path, capsys):
    assert main(["ces", "encode", str(source), "-o", str(tmp_path / "s")]) == 0
    target = tmp_path / "flights.csv"
    target.write_bytes(b"an older copy")
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main(["ces", "decode", str(tmp_path / "s"), "-o", str(target)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab ces: ConfigError: cannot write the rebuilt data to {str(target)!r}: the file "
        "already exists; pass overwrite=True (CLI: --force) to replace it, or choose another "
        "path\n"
    )
    assert target.read_bytes() == b"an older copy" and _tree(tmp_path) == before

    assert main(["ces", "decode", str(tmp_path / "s"), "-o", str(target), "--force"]) == 0
    assert target.read_bytes() == source.read_bytes() and _tree(tmp_path) == before


def test_encode_of_a_directory_is_one_typed_line(keyed, source, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    assert main(["ces", "encode", ".", "-o", "x"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "wgtlab ces: ConfigError: '.' is a directory, not a file to shard\n"
    assert _tree(tmp_path) == before


def test_key_file_holds_hex_or_32_raw_bytes(monkeypatch, source, tmp_path, capsys):
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    raw = bytes([0xFF, 0xC3, 0x28, 0x00]) + os.urandom(28)  # not UTF-8, whatever the rest is
    (tmp_path / "raw.key").write_bytes(raw)
    (tmp_path / "hex.key").write_bytes(b"  " + raw.hex().upper().encode() + b"\r\n")
    encode = ["ces", "encode", str(source), "-o", str(tmp_path / "rk")]
    assert main([*encode, "--key-file", str(tmp_path / "raw.key")]) == 0
    decode = ["ces", "decode", str(tmp_path / "rk"), "-o", str(tmp_path / "back")]
    assert main([*decode, "--key-file", str(tmp_path / "hex.key")]) == 0  # the same key
    assert (tmp_path / "back").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"\xff\xfe" + bytes(range(38)), "holds 40 bytes"),
        (bytes(range(31)), "holds 31 bytes"),
        (bytes(range(1, 34)), "holds 33 bytes"),
        (KEY_HEX[:32].encode(), "holds 32 bytes of text, not random binary bytes"),
        (b"correct horse battery staple!!!\n", "holds 32 bytes of text, not random binary bytes"),
        (KEY_HEX[:63].encode() + b"g\n", "holds 64 characters that are not all hex digits"),
    ],
)
def test_malformed_key_file_is_named_never_echoed(
    monkeypatch, source, tmp_path, capsys, content, problem
):
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    key_file = tmp_path / "bad.key"
    key_file.write_bytes(content)
    before = _tree(tmp_path)
    argv = ["ces", "encode", str(source), "-o", str(tmp_path / "s"), "--key-file", str(key_file)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab ces: KeyConfigError: the key file {key_file} {problem}; expected 64 hex "
        "characters (optionally followed by a newline), e.g. from `wgtlab keygen > FILE`, or "
        "exactly 32 raw bytes, e.g. from `head -c 32 /dev/urandom > FILE`\n"
    )
    assert _tree(tmp_path) == before
    assert "position" not in err and "0x" not in err and "\\x" not in err


def test_binary_master_secret_file_is_a_key_error_not_a_crash(
    monkeypatch, source, tmp_path, capsys
):
    monkeypatch.delenv("CES_MASTER_SECRET", raising=False)
    secret = tmp_path / "master.bin"
    secret.write_bytes(b"\xff\xc3" + os.urandom(30))
    argv = ["ces", "encode", str(source), "-o", str(tmp_path / "s"), "--tenant", "acme"]
    assert main([*argv, "--master-secret-file", str(secret)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab ces: KeyConfigError: the master secret file {secret} is not hex; expected an "
        "even number of hex digits\n"
    )
    assert not (tmp_path / "s").exists()


def test_two_explicit_key_sources_are_refused(monkeypatch, source, tmp_path, capsys):
    monkeypatch.setenv("CES_MASTER_SECRET", os.urandom(32).hex())
    monkeypatch.setenv("CES_ENCRYPTION_KEY", KEY_HEX)
    (tmp_path / "raw.key").write_bytes(os.urandom(32))
    (tmp_path / "master.hex").write_text(os.urandom(32).hex())
    before = _tree(tmp_path)
    encode = ["ces", "encode", str(source), "-o", str(tmp_path / "t3")]
    key_file = ["--key-file", str(tmp_path / "raw.key")]
    decode = ["ces", "decode", str(tmp_path / "t3"), "-o", str(tmp_path / "out")]
    for argv in (
        [*encode, "--tenant", "acme", *key_file],
        [*decode, *key_file, "--tenant", "acme"],
        ["ces", "inspect", str(tmp_path / "t3"), "--tenant", "acme", *key_file],
    ):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (
            "wgtlab ces: ConfigError: --key-file and --tenant both name a key; give one: "
            "--key-file FILE for a key of its own, or --tenant ID to derive the tenant's key "
            "from the master secret\n"
        )
    assert main([*encode, *key_file, "--master-secret-file", str(tmp_path / "master.hex")]) == 1
    assert capsys.readouterr().err == (
        "wgtlab ces: ConfigError: --master-secret-file is the secret tenant keys are derived "
        "from; use it with --tenant ID\n"
    )
    assert _tree(tmp_path) == before

    # One explicit source at a time works, and beats $CES_ENCRYPTION_KEY.
    assert main([*encode, *key_file]) == 0
    assert main(["ces", "decode", str(tmp_path / "t3"), "-o", str(tmp_path / "o")]) == 1
    assert "KeyMismatchError" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["ces", "decode", str(tmp_path / "t3"), "-o", str(tmp_path / "o"), *key_file]) == 0
    assert (tmp_path / "o").read_bytes() == source.read_bytes()
