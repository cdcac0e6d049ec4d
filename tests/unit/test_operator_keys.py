"""The operator keys a node trusts (nodeagent/security/operators.py): one key per NAME.pub, and nothing from a file
or directory that someone else could have written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.security.keys import SigningKey
from nodeagent.security.operators import read_operator_keys

ALICE, BOB = SigningKey.generate(), SigningKey.generate()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    where = tmp_path / "operators.d"
    where.mkdir(mode=0o755)
    return where


def put(where: Path, name: str, text: str | bytes, mode: int = 0o644) -> Path:
    path = where / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(mode)
    return path


def test_each_pub_file_is_a_key_named_after_its_file(keys_dir: Path) -> None:
    put(keys_dir, "alice.pub", f"# the operator's laptop\n\n{ALICE.public.line('alice@laptop')}\n")
    put(keys_dir, "bob.pub", BOB.public.b64 + "\n")
    put(keys_dir, "README", "not a key, not read")
    keys = read_operator_keys(keys_dir)
    assert keys.names == ["alice", "bob"] and keys.problems == ()
    assert keys.keys[ALICE.public.id].raw == ALICE.public.raw


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [
        ("", 0o644, "expected one key line"),
        (f"{ALICE.public.line()}\n{BOB.public.line()}\n", 0o644, "found 2"),
        ("picluster-ed25519 AAAA\n", 0o644, "not 32"),
        (ALICE.public.line(), 0o664, "may be written by others (mode 0664): chmod go-w"),
        (ALICE.public.line(), 0o646, "may be written by others"),
        (b"\xff\xfe", 0o644, "is not text"),
    ],
)
def test_a_file_that_cannot_be_trusted_is_skipped_with_the_reason(
    keys_dir: Path, text: str | bytes, mode: int, why: str
) -> None:
    put(keys_dir, "bad.pub", text, mode)
    put(keys_dir, "good.pub", BOB.public.line())
    keys = read_operator_keys(keys_dir)
    assert keys.names == ["good"]
    (problem,) = keys.problems
    assert "bad.pub" in problem and why in problem


def test_a_symlink_is_not_followed(keys_dir: Path, tmp_path: Path) -> None:
    target = put(tmp_path, "elsewhere.pub", ALICE.public.line())
    (keys_dir / "alice.pub").symlink_to(target)
    keys = read_operator_keys(keys_dir)
    assert keys.keys == {} and "symlink" in keys.problems[0]


def test_a_directory_others_may_write_trusts_nothing(keys_dir: Path) -> None:
    put(keys_dir, "alice.pub", ALICE.public.line())
    keys_dir.chmod(0o777)
    keys = read_operator_keys(keys_dir)
    assert keys.keys == {} and "chmod go-w" in keys.problems[0]


def test_a_file_owned_by_another_user_is_skipped(keys_dir: Path) -> None:
    path = put(keys_dir, "alice.pub", ALICE.public.line())
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")  # the suite runs as root (docs: make test)
    os.chown(path, 65534, -1)
    keys = read_operator_keys(keys_dir)
    assert keys.keys == {} and "owned by uid 65534, not root" in keys.problems[0]


def test_the_same_key_twice_keeps_the_first_name(keys_dir: Path) -> None:
    put(keys_dir, "a.pub", ALICE.public.line())
    put(keys_dir, "b.pub", ALICE.public.line())
    keys = read_operator_keys(keys_dir)
    assert keys.names == ["a"] and "the same key as a.pub" in keys.problems[0]


def test_a_missing_directory_trusts_no_key_and_says_so(tmp_path: Path) -> None:
    keys = read_operator_keys(tmp_path / "absent")
    assert keys.keys == {} and "does not exist" in keys.problems[0]
