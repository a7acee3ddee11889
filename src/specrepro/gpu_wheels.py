"""The wheel folder for a GPU node without a package index (`make gpu-wheels`, gpu/preflight.sh).

gpu/wheels.lock pins the few wheels such a node lacks beside its own torch; `make gpu-wheels`
downloads them into gpu/wheels/ with a wheel of specrepro, and `python -m specrepro.gpu_wheels
LOCK FOLDER` checks that folder: one wheel per lock entry and one of specrepro, nothing else,
under MAX_BYTES in all. Standard library only: gpu/preflight.sh runs this file as a script with
the node's python before anything is installed (importing the package would check the node's
own, older transformers: specrepro.compat).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 60_000_000
OWN = "specrepro"
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
WHEEL_COMMENT = re.compile(r"#\s*wheel:\s*(\S+\.whl),\s*(\d+)\s+bytes")


class WheelFolderError(Exception):
    """The lock or the wheel folder is not what the preflight needs; the message says what."""


@dataclass(frozen=True)
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    size: int  # bytes of the CPython 3.12 manylinux x86_64 wheel, from its `# wheel:` line


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(wheel: str) -> tuple[str, str]:
    """(normalised name, version) from a wheel file name (NAME-VERSION-...-TAGS.whl)."""
    parts = Path(wheel).name.split("-")
    if len(parts) < 5 or not parts[-1].endswith(".whl"):
        raise WheelFolderError(f"{wheel}: not a wheel file name")
    return normalise(parts[0]), parts[1]


def logical_lines(text: str) -> list[str]:
    """The lines of a requirements file with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def read_lock(lock: Path) -> list[Pin]:
    """The lock's entries; each must be NAME==VERSION after its `# wheel: FILE, N bytes` line."""
    pins: list[Pin] = []
    wheel: tuple[str, str, int] | None = None  # the last `# wheel:` line not yet used
    for line in logical_lines(lock.read_text()):
        stripped = line.strip()
        if comment := WHEEL_COMMENT.match(stripped):
            name, version = wheel_name_version(comment[1])
            wheel = (name, version, int(comment[2]))
            continue
        if not stripped or stripped.startswith("#"):
            continue
        requirement = stripped.split()[0]
        pin = PIN.fullmatch(requirement)
        if pin is None:
            raise WheelFolderError(f"{lock}: {requirement!r} is not pinned as NAME==VERSION")
        name, version = normalise(pin[1]), pin[2]
        if wheel is None or wheel[:2] != (name, version):
            raise WheelFolderError(
                f"{lock}: {name}=={version} has no `# wheel: FILE, N bytes` line of that version"
            )
        if any(p.name == name for p in pins):
            raise WheelFolderError(f"{lock}: {name} is pinned twice")
        pins.append(Pin(name, version, wheel[2]))
        wheel = None
    return pins


def check_folder(lock: Path, folder: Path, max_bytes: int = MAX_BYTES) -> int:
    """Check the folder against the lock; returns its wheels' total bytes.

    Raises WheelFolderError naming every problem: an entry without its wheel (or with another
    version), several wheels of one project, a wheel the lock does not name, no specrepro wheel,
    or a total over max_bytes.
    """
    if not folder.is_dir():
        raise WheelFolderError(f"no folder {folder}: build it with `make gpu-wheels`")
    pins = {p.name: p for p in read_lock(lock)}
    wheels: dict[str, list[Path]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        wheels.setdefault(wheel_name_version(wheel.name)[0], []).append(wheel)
    problems: list[str] = []
    for name in [*pins, OWN]:
        found = wheels.get(name, [])
        if not found:
            pinned = f"=={pins[name].version}" if name in pins else ""
            problems.append(f"missing: no wheel of {name}{pinned}")
        elif len(found) > 1:
            problems.append(f"several wheels of {name}: {', '.join(w.name for w in found)}")
        elif name in pins and wheel_name_version(found[0].name)[1] != pins[name].version:
            problems.append(f"{found[0].name}: the lock pins {name}=={pins[name].version}")
    for name in sorted(set(wheels) - set(pins) - {OWN}):
        problems.append(f"not in {lock.name}: {', '.join(w.name for w in wheels[name])}")
    sizes = {w.name: w.stat().st_size for found in wheels.values() for w in found}
    total = sum(sizes.values())
    if total > max_bytes:
        largest = max(sizes, key=sizes.__getitem__)
        problems.append(
            f"the wheels total {total / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit "
            f"(largest: {largest}, {sizes[largest] / 1e6:.1f} MB)"
        )
    if problems:
        raise WheelFolderError(f"{folder} does not match {lock}:\n  " + "\n  ".join(problems))
    return total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m specrepro.gpu_wheels LOCK FOLDER", file=sys.stderr)
        return 2
    lock, folder = Path(args[0]), Path(args[1])
    try:
        total = check_folder(lock, folder)
    except WheelFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = len(list(folder.glob("*.whl")))
    print(f"OK {folder}: {count} wheels, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
