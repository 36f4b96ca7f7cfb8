"""Generates the shared Python package facesearch.v1 from protos/ (never edit its files by hand).

Run `python -m facesearch.codegen` (or `make protos`) after changing a .proto; a test fails when
the committed stubs differ from what this writes.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE_DIR = Path("facesearch") / "v1"
INIT_TEXT = '"""Generated from protos/facesearch/v1 by facesearch.codegen: do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Writes facesearch/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py and __init__.py under out_root."""
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    (out_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir() if p.is_file())


def main() -> int:
    written = generate(REPO_ROOT)
    print("\n".join(str(p.relative_to(REPO_ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
