"""protos/ is the wire's one truth: the committed stubs are exactly what codegen writes, buf's
STANDARD lint is clean, and the wire has no breaking change against main."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

from facesearch import codegen
from tests.tools import venv_tool

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def buf() -> str:
    return venv_tool("buf")


def test_committed_stubs_match_regenerated(tmp_path: Path) -> None:
    written = codegen.generate(tmp_path)
    fresh_dir = tmp_path / codegen.PACKAGE_DIR
    committed_dir = REPO_ROOT / codegen.PACKAGE_DIR
    fresh = {p.name for p in written}
    committed = {p.name for p in committed_dir.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}}
    assert committed == fresh, "stub files added or missing: run `make protos` and commit"
    _, mismatch, errors = filecmp.cmpfiles(committed_dir, fresh_dir, sorted(fresh), shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch + errors}: run `make protos` and commit"


def test_buf_lint_is_clean(buf: str) -> None:
    result = subprocess.run([buf, "lint"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_main(buf: str) -> None:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "refs/heads/main"], cwd=REPO_ROOT, capture_output=True
    )
    if shutil.which("git") is None or has_main.returncode != 0:
        pytest.skip("no local main branch to compare the wire against")
    result = subprocess.run(
        [buf, "breaking", "--against", ".git#branch=main"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_check_catches_a_break(buf: Path, tmp_path: Path) -> None:
    """The check above must compare for real, also from a git worktree (where `.git` is a file):
    a copy of protos/ with a field renamed fails it."""
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "refs/heads/main"], cwd=REPO_ROOT, capture_output=True
    )
    if has_main.returncode != 0:
        pytest.skip("no local main branch to compare the wire against")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    search = tmp_path / "protos" / "facesearch" / "v1" / "search.proto"
    search.write_text(search.read_text().replace("string display_name = 2;", "string title = 2;", 1))
    result = subprocess.run(
        [buf, "breaking", str(tmp_path), "--against", f"{REPO_ROOT / '.git'}#branch=main"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "display_name" in result.stdout + result.stderr, result


def test_every_message_and_field_is_documented() -> None:
    from google.protobuf import descriptor_pb2

    from facesearch.v1 import embedder_pb2, face_pb2, search_pb2

    for module in (face_pb2, embedder_pb2, search_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        source = (REPO_ROOT / "protos" / module.DESCRIPTOR.name).read_text()
        for message in file_proto.message_type:
            assert f"message {message.name} " in source
            _assert_commented(source, f"message {message.name} ")
            for field in message.field:
                _assert_commented(source, f" {field.name} = {field.number};", within=f"message {message.name} ")


def _assert_commented(source: str, needle: str, within: str | None = None) -> None:
    start = source.index(within) if within else 0
    position = source.index(needle, start)
    line_start = source.rfind("\n", 0, position)
    previous_line = source[source.rfind("\n", 0, line_start) + 1 : line_start].strip()
    assert previous_line.startswith("//"), f"no comment above {needle.strip()!r}"
