"""The oldest torch and transformers the engine runs on, checked when specrepro is imported.

GPU nodes often bring their own torch and transformers. The engine passes its cache to every
forward as `cache=`, which transformers takes from 5.24 on; an older release accepts the keyword
silently and builds a fresh cache per forward, so decoding would be wrong with no error (the
runner also checks after every forward that its cache advanced: engine/runner.py). torch 2.11 is
the torch of the GPU images the offline preflight (gpu/preflight.sh) is built for; older releases
are untested.
"""

from __future__ import annotations

import importlib.metadata

from packaging.version import Version

MINIMUM = {"torch": "2.11", "transformers": "5.24"}
BELOW = {"transformers": "5.40"}  # 5.40 drops the `past_key_values=` alias our models expect
WHY = {
    "torch": "the oldest torch the GPU preflight is built for",
    "transformers": "the first release that takes the engine's cache as `cache=`",
}


class UnsupportedVersionError(ImportError):
    """An installed torch or transformers outside the range specrepro runs on."""


def installed_versions() -> dict[str, str]:
    """The installed versions of the packages in MINIMUM (a missing package is left out: its
    own import error says more)."""
    found = {}
    for name in MINIMUM:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def check_versions(versions: dict[str, str] | None = None) -> None:
    """Raise UnsupportedVersionError naming every package outside its supported range."""
    versions = installed_versions() if versions is None else versions
    problems = []
    for name, found in sorted(versions.items()):
        release = Version(Version(found).base_version)
        if release < Version(MINIMUM[name]):
            problems.append(f"{name} {found} is older than {MINIMUM[name]} ({WHY[name]})")
        elif name in BELOW and release >= Version(BELOW[name]):
            problems.append(f"{name} {found} is not below {BELOW[name]} (untested)")
    if problems:
        raise UnsupportedVersionError(
            "specrepro cannot run with the installed packages: "
            + "; ".join(problems)
            + ". Install the supported versions (`make install`), or on a GPU node without a "
            "package index bring them as wheels (README: 'On a GPU node without a package index')."
        )
