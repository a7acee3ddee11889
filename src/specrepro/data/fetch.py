"""Fetch datasets from a mirror folder or the official URLs, each file checked by sha256."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from specrepro.data.manifest import DATASET_NAMES, MANIFESTS, DatasetManifest, FileEntry

# Per-dataset record of every file: its sha256, where it came from, and whether this fetch
# fetched it or found it already there. It lets verify_dataset accept Spider databases from the
# official zip, whose hashes differ from the mirror's recovered copies, and it is the output
# the workflow's fetch_data rule declares, so every fetch writes it (Snakemake deletes outputs
# before rerunning a job, and a rerun over complete data fetches nothing).
RECORD_NAME = "fetch_record.json"
FETCHED = "fetched"
PRESENT = "present"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
DOWNLOAD_ATTEMPTS = 3
_RETRY_WAIT_S = 2.0


class DataError(Exception):
    """A dataset file is missing, corrupt, unreachable or malformed."""


class DataWarning(UserWarning):
    """Data usable but not identical to the mirror (official Spider databases)."""


def get_manifest(name: str) -> DatasetManifest:
    """The built-in manifest of a dataset; DataError for unknown names."""
    if name not in MANIFESTS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return MANIFESTS[name]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_dataset(name: str, data_dir: Path, manifest: DatasetManifest | None = None) -> None:
    """Raise DataError unless every required file of `name` is in data_dir with its hash."""
    man = _resolve_manifest(name, manifest)
    data_dir = Path(data_dir)
    record = _read_record(data_dir / name)
    problems = [p for e in man.files if (p := _check(data_dir, e, record)) is not None]
    if problems:
        raise DataError(
            f"{name}: data in {data_dir} not usable: {'; '.join(problems)} "
            f"(fetch it again with fetch_dataset)"
        )


def fetch_dataset(
    name: str,
    dest: Path,
    mirror: Path | None,
    url_overrides: dict[str, str] | None = None,
    manifest: DatasetManifest | None = None,
) -> Path:
    """Put the files of dataset `name` into dest/<name>/ and return that folder.

    Files already present with the right hash are kept. Others are copied from mirror/<path>
    when the mirror has them, else downloaded. url_overrides maps a dataset name (its archive,
    or its only file) or a file path such as "squad/dev-v1.1.json" to a URL or a local path.
    dest/<name>/fetch_record.json is (re)written every time, unless dest is the mirror itself
    (read-only): each file's sha256, source, and status "fetched" or "present".
    """
    man = _resolve_manifest(name, manifest)
    overrides = dict(url_overrides or {})
    dest = Path(dest)
    root = dest / name
    record = _read_record(root)
    previous = {k: dict(v) for k, v in record.items()}
    fetched: set[str] = set()

    pending = [
        e for e in man.files if not (dest / e.path).is_file() or _check(dest, e, record) is not None
    ]
    missing_in_mirror: list[FileEntry] = []
    for entry in pending:
        src = Path(mirror) / entry.path if mirror is not None else None
        if src is not None and src.is_file():
            digest = _copy_from_mirror(name, src, dest / entry.path, entry)
            record[entry.path] = {"sha256": digest, "source": str(src)}
            fetched.add(entry.path)
        elif entry.sha256 is not None:
            missing_in_mirror.append(entry)

    from_archive: list[FileEntry] = []
    for entry in missing_in_mirror:
        url = _file_url(man, entry, overrides)
        if url is None:
            from_archive.append(entry)
            continue
        target = dest / entry.path
        try:
            tmp, digest = _download(url, target.parent, desc=entry.path)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DataError(f"{name}: {_not_in_mirror(entry.path, mirror, url)}: {exc}") from exc
        _commit(
            tmp, target, digest, entry.sha256, f"{name}: ", f"{entry.path} downloaded from {url}"
        )
        record[entry.path] = {"sha256": digest, "source": url}
        fetched.add(entry.path)

    if from_archive:
        archive_url = _archive_url(man, overrides)
        if archive_url is None:
            paths = ", ".join(e.path for e in from_archive)
            where = f"mirror {mirror}" if mirror is not None else "a mirror (none given)"
            raise DataError(f"{name}: {paths} not in {where} and no download URL is known")
        optional_missing = [
            e for e in man.files if e.sha256 is None and not (dest / e.path).is_file()
        ]
        fetched |= _fetch_from_archive(
            man, dest, from_archive + optional_missing, archive_url, mirror, record
        )

    # The mirror used in place is read-only and needs no record: its files match the manifest.
    if not _is_mirror_itself(root, mirror):
        _write_record(root, _full_record(man, dest, record, previous, fetched))
    verify_dataset(name, dest, manifest=man)
    return root


def _is_mirror_itself(root: Path, mirror: Path | None) -> bool:
    return mirror is not None and root.resolve() == (Path(mirror) / root.name).resolve()


def _full_record(
    man: DatasetManifest,
    dest: Path,
    record: dict[str, dict[str, str]],
    previous: dict[str, dict[str, str]],
    fetched: set[str],
) -> dict[str, dict[str, str]]:
    """An entry for every manifest file now in dest, in manifest order.

    A file kept from before keeps its recorded source; when the record was lost (a forced
    rerun deletes it) the source is unknown, but the file passed the same checks as a fetch.
    """
    full: dict[str, dict[str, str]] = {}
    for entry in man.files:
        path = dest / entry.path
        if entry.path in fetched:
            full[entry.path] = {**record[entry.path], "status": FETCHED}
        elif path.is_file():
            digest = sha256_file(path)
            old = previous.get(entry.path, {})
            source = old["source"] if old.get("sha256") == digest and "source" in old else None
            full[entry.path] = {
                "sha256": digest,
                "source": source or "unknown (already present, no earlier record)",
                "status": PRESENT,
            }
    return full


def _resolve_manifest(name: str, manifest: DatasetManifest | None) -> DatasetManifest:
    if manifest is None:
        return get_manifest(name)
    if manifest.name != name:
        raise DataError(f"manifest is for dataset {manifest.name!r}, not {name!r}")
    return manifest


def _check(data_dir: Path, entry: FileEntry, record: dict[str, dict[str, str]]) -> str | None:
    """Why the file is not usable, or None when it is."""
    path = data_dir / entry.path
    if not path.is_file():
        return None if entry.sha256 is None else f"missing {entry.path}"
    recorded = record.get(entry.path, {}).get("sha256")
    if entry.sha256 is None and recorded is None:
        return None
    got = sha256_file(path)
    if got == entry.sha256:
        return None
    if (entry.mirror_hash_only or entry.sha256 is None) and got == recorded:
        return None
    expected = entry.sha256 if entry.sha256 is not None else recorded
    return f"sha256 mismatch for {entry.path}, expected {expected}, got {got}"


def _file_url(man: DatasetManifest, entry: FileEntry, overrides: dict[str, str]) -> str | None:
    if entry.path in overrides:
        return _as_url(overrides[entry.path])
    if man.archive_url is None and len(man.files) == 1 and man.name in overrides:
        return _as_url(overrides[man.name])
    return entry.url


def _archive_url(man: DatasetManifest, overrides: dict[str, str]) -> str | None:
    if man.name in overrides:
        return _as_url(overrides[man.name])
    return man.archive_url


def _as_url(location: str) -> str:
    # A plain path (e.g. a spider_data.zip fetched by hand) becomes a file:// URL for urllib.
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def _not_in_mirror(what: str, mirror: Path | None, url: str) -> str:
    if mirror is None:
        return f"download of {what} from {url} failed (no mirror given)"
    if not Path(mirror).is_dir():
        return (
            f"the mirror folder {mirror} does not exist, and download of {what} from {url} failed"
        )
    return f"{what} not in mirror {mirror} and download from {url} failed"


def _stream_to_temp(
    src: BinaryIO, folder: Path, total: int | None = None, desc: str | None = None
) -> tuple[Path, str]:
    """Copy a stream into a temp file in `folder`; return the temp path and its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".fetch-", suffix=".part")
    tmp = Path(name)
    h = hashlib.sha256()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=desc,
                disable=None if desc else True,
            ) as bar,
        ):
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, h.hexdigest()


def _download(url: str, folder: Path, desc: str) -> tuple[Path, str]:
    """Download into a temp file, trying DOWNLOAD_ATTEMPTS times before giving up."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                return _stream_to_temp(resp, folder, total=total, desc=desc)
        except (OSError, http.client.HTTPException):
            if attempt == DOWNLOAD_ATTEMPTS or url.startswith("file:"):
                raise
            time.sleep(_RETRY_WAIT_S * attempt)
    raise AssertionError("unreachable")


def _commit(
    tmp: Path, target: Path, digest: str, expected: str | None, prefix: str, what: str
) -> None:
    """Rename tmp onto target if its hash is the expected one (None: any hash)."""
    if expected is not None and digest != expected:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{prefix}sha256 mismatch for {what}, expected {expected}, got {digest}")
    os.replace(tmp, target)


def _copy_from_mirror(name: str, src: Path, target: Path, entry: FileEntry) -> str:
    with open(src, "rb") as f:
        tmp, digest = _stream_to_temp(f, target.parent)
    _commit(tmp, target, digest, entry.sha256, f"{name}: ", f"{entry.path} in mirror {src}")
    return digest


def _archive_prefix(names: list[str], anchor: str) -> str | None:
    """Folder prefix inside the zip under which `anchor` (e.g. "dev.json") lies."""
    hits = [
        n
        for n in names
        if (n == anchor or n.endswith("/" + anchor)) and not n.startswith("__MACOSX")
    ]
    if not hits:
        return None
    best = min(hits, key=len)
    return best[: len(best) - len(anchor)]


def _fetch_from_archive(
    man: DatasetManifest,
    dest: Path,
    entries: list[FileEntry],
    url: str,
    mirror: Path | None,
    record: dict[str, dict[str, str]],
) -> set[str]:
    """Extract entries from the archive at url into dest; return the paths extracted."""
    name = man.name
    required = [e for e in entries if e.sha256 is not None]
    what = required[0].path + (f" and {len(required) - 1} more files" if len(required) > 1 else "")
    root = dest / name
    try:
        zip_tmp, zip_digest = _download(url, root, desc=f"{name} archive")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DataError(f"{name}: {_not_in_mirror(what, mirror, url)}: {exc}") from exc
    differ: list[str] = []
    extracted: set[str] = set()
    try:
        if man.archive_sha256 is not None and zip_digest != man.archive_sha256:
            raise DataError(_archive_mismatch(man, url, zip_digest, zip_tmp.stat().st_size))
        if not zipfile.is_zipfile(zip_tmp):
            raise DataError(
                f"{name}: {url} did not return a zip archive (a web page instead?); "
                f"download it by hand and pass its local path as url_overrides[{name!r}]"
            )
        with zipfile.ZipFile(zip_tmp) as zf:
            names = zf.namelist()
            inner = {e.path: e.path.removeprefix(f"{name}/") for e in entries}
            prefix = _archive_prefix(names, inner[required[0].path]) if required else ""
            if prefix is None:
                raise DataError(f"{name}: {required[0].path} not found in archive {url}")
            for entry in entries:
                member = prefix + inner[entry.path]
                if member not in names:
                    if entry.sha256 is None:
                        continue
                    raise DataError(f"{name}: {entry.path} not found in archive {url}")
                target = dest / entry.path
                with zf.open(member) as src:
                    tmp, digest = _stream_to_temp(src, target.parent)
                expected = None if entry.mirror_hash_only else entry.sha256
                _commit(
                    tmp, target, digest, expected, f"{name}: ", f"{entry.path} in archive {url}"
                )
                if entry.mirror_hash_only and digest != entry.sha256:
                    differ.append(entry.path)
                record[entry.path] = {
                    "sha256": digest,
                    "source": f"{url}#{member}",
                    "archive_sha256": zip_digest,
                }
                extracted.add(entry.path)
    finally:
        zip_tmp.unlink(missing_ok=True)
    if differ:
        warnings.warn(
            DataWarning(
                f"{name}: {len(differ)} files from {url} differ from the mirror's recovered "
                f"copies (kept: {_vouched(man)}; hashes recorded in {root / RECORD_NAME}): "
                f"{', '.join(differ)}"
            ),
            stacklevel=3,
        )
    return extracted


def _archive_mismatch(man: DatasetManifest, url: str, digest: str, size: int) -> str:
    msg = (
        f"{man.name}: sha256 mismatch for the archive from {url} ({size:,} bytes), expected "
        f"{man.archive_sha256}, got {digest}; nothing was extracted"
    )
    if man.archive_sha256_verified:
        return msg
    return (
        f"{msg}. The expected hash was never checked against a real download by this project "
        f"(it is the one public records give for the official archive, see "
        f"specrepro/data/manifest.py), so the upstream archive may have changed, the download "
        f"may be a web page or cut short, or the pin may be wrong. Use a data mirror holding "
        f"{man.name}/ (data.mirror) instead, and please report the hash you got"
    )


def _vouched(man: DatasetManifest) -> str:
    if man.archive_sha256 is None:
        return "the archive has no pinned sha256"
    unverified = "" if man.archive_sha256_verified else ", a pin this project never verified"
    return f"the archive matched its pinned sha256 {man.archive_sha256[:12]}...{unverified}"


def _read_record(root: Path) -> dict[str, dict[str, str]]:
    path = root / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"unreadable fetch record {path}: {exc}") from exc
    return {str(k): dict(v) for k, v in files.items()}


def _write_record(root: Path, record: dict[str, dict[str, str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"files": dict(sorted(record.items()))}, indent=1) + "\n"
    fd, name = tempfile.mkstemp(dir=root, prefix=".fetch-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(name, root / RECORD_NAME)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
