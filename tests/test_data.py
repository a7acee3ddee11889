"""Data layer: fetching with sha256 checks, loaders, subsampling, prompt JSONL (no network)."""

from __future__ import annotations

import json
import random
import warnings
import zipfile
from pathlib import Path

import pytest

from specrepro.data import (
    DATASET_NAMES,
    MANIFESTS,
    DataError,
    DatasetManifest,
    DataWarning,
    FileEntry,
    complement,
    fetch_dataset,
    load_mtbench,
    load_prompts,
    load_records,
    load_spider,
    load_squad,
    load_training_prompts,
    load_tuning_prompts,
    read_prompts_jsonl,
    sha256_file,
    spider_coverage,
    spider_db_path,
    subsample,
    verify_dataset,
    write_jsonl,
)
from specrepro.data.fetch import RECORD_NAME
from specrepro.data.spider import spider_db_available
from tests.conftest import real_mirror_path, write_tiny_config
from tests.tiny_data import add_official_only_databases, build_tiny_mirror, spider_db_file

SPIDER_ZIP_URL = "https://example.invalid/spider_data.zip"  # always overridden by a local zip
RECORD_KEYS = [
    "question_id",
    "dataset",
    "turns",
    "few_shot",
    "system",
    "answer_format",
    "reference",
    "conversation",
]
# The Spider questions of the committed figures (default config: n 12, subsample_seed 0), as
# results/tidy.csv of the committed run lists them.
COMMITTED_SPIDER_SAMPLE = [
    f"spider-{i}" for i in (104, 306, 422, 497, 510, 571, 595, 822, 846, 901, 944, 970)
]


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A tiny mirror of the test's own, free to change."""
    return build_tiny_mirror(tmp_path / "mirror")


def _manifest(root: Path, name: str, **kw: object) -> DatasetManifest:
    """A manifest whose hashes are those of the fixture files of one dataset."""
    files = tuple(
        FileEntry(p.relative_to(root).as_posix(), sha256_file(p))
        for p in sorted((root / name).rglob("*"))
        if p.is_file()
    )
    return DatasetManifest(name, files, **kw)  # type: ignore[arg-type]


# --- fetch / verify -------------------------------------------------------------------------


def test_fetch_copies_from_mirror_and_is_idempotent(mirror: Path, tmp_path: Path) -> None:
    man = _manifest(mirror, "squad")
    dest = tmp_path / "data"
    out = fetch_dataset("squad", dest, mirror, manifest=man)
    assert out == dest / "squad"
    target = dest / "squad" / "dev-v1.1.json"
    assert target.read_bytes() == (mirror / "squad" / "dev-v1.1.json").read_bytes()
    verify_dataset("squad", dest, manifest=man)
    before = target.stat().st_mtime_ns, target.stat().st_ino
    # A second call must keep the good file and not need the mirror any more.
    fetch_dataset("squad", dest, tmp_path / "no-such-mirror", manifest=man)
    assert (target.stat().st_mtime_ns, target.stat().st_ino) == before
    assert not [p for p in (dest / "squad").iterdir() if p.name.endswith(".part")]
    # The mirror itself is a valid data folder; using it in place writes nothing there.
    spider = DatasetManifest(
        "spider",
        (*_manifest(mirror, "spider").files, FileEntry("spider/database/wta_1/wta_1.sqlite", None)),
    )
    fetch_dataset("spider", mirror, mirror, manifest=spider)
    assert not (mirror / "spider" / "fetch_record.json").exists()


def test_fetch_sha_mismatch(mirror: Path, tmp_path: Path) -> None:
    man = DatasetManifest("squad", (FileEntry("squad/dev-v1.1.json", "0" * 64),))
    with pytest.raises(DataError, match="sha256 mismatch") as err:
        fetch_dataset("squad", tmp_path / "data", mirror, manifest=man)
    assert "squad/dev-v1.1.json" in str(err.value) and "0" * 64 in str(err.value)
    assert not (tmp_path / "data" / "squad" / "dev-v1.1.json").exists()


def test_missing_file_error_names_file_mirror_and_url(mirror: Path, tmp_path: Path) -> None:
    (mirror / "squad" / "dev-v1.1.json").unlink()
    url = (tmp_path / "nowhere" / "dev.json").as_uri()
    man = DatasetManifest("squad", (FileEntry("squad/dev-v1.1.json", "0" * 64, url=url),))
    with pytest.raises(DataError) as err:
        fetch_dataset("squad", tmp_path / "data", mirror, manifest=man)
    msg = str(err.value)
    assert msg.startswith("squad: squad/dev-v1.1.json not in mirror")
    assert str(mirror) in msg and url in msg and "download" in msg


def test_download_from_url_when_no_mirror(mirror: Path, tmp_path: Path) -> None:
    man = _manifest(mirror, "mtbench")
    local = mirror / "mtbench" / "question.jsonl"
    dest = tmp_path / "data"
    fetch_dataset("mtbench", dest, None, url_overrides={"mtbench": str(local)}, manifest=man)
    assert (dest / "mtbench" / "question.jsonl").read_bytes() == local.read_bytes()


def test_unknown_dataset(tmp_path: Path) -> None:
    for call in (
        lambda: fetch_dataset("imagenet", tmp_path, None),
        lambda: verify_dataset("imagenet", tmp_path),
        lambda: load_prompts("imagenet", tmp_path, None, 0),
    ):
        with pytest.raises(DataError, match="imagenet.*mtbench, squad, spider"):
            call()


def test_verify_reports_missing_and_corrupt(mirror: Path, tmp_path: Path) -> None:
    man = _manifest(mirror, "spider")
    dest = tmp_path / "data"
    fetch_dataset("spider", dest, mirror, manifest=man)
    (dest / "spider" / "dev.json").write_text("[]", encoding="utf-8")
    (dest / "spider" / "tables.json").unlink()
    with pytest.raises(DataError) as err:
        verify_dataset("spider", dest, manifest=man)
    msg = str(err.value)
    assert "sha256 mismatch for spider/dev.json" in msg and "missing spider/tables.json" in msg


def test_spider_from_archive_warns_on_sqlite_difference(mirror: Path, tmp_path: Path) -> None:
    singer = "spider/database/concert_singer/concert_singer.sqlite"
    wta = "spider/database/wta_1/wta_1.sqlite"
    man = DatasetManifest(
        "spider",
        (
            FileEntry("spider/dev.json", sha256_file(mirror / "spider/dev.json")),
            FileEntry("spider/tables.json", sha256_file(mirror / "spider/tables.json")),
            # The mirror's copy differs from the archive's, as for the recovered databases.
            FileEntry(singer, "f" * 64, mirror_hash_only=True),
            FileEntry(wta, None),
        ),
        archive_url=SPIDER_ZIP_URL,
    )
    zip_path = tmp_path / "spider_data.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for rel in ("spider/dev.json", "spider/tables.json", singer):
            zf.write(mirror / rel, "spider_data/" + rel.removeprefix("spider/"))
        zf.writestr("spider_data/database/wta_1/wta_1.sqlite", b"wta bytes")
        zf.writestr("__MACOSX/spider_data/dev.json", b"junk")
    dest = tmp_path / "data"
    with pytest.warns(DataWarning, match="concert_singer.sqlite"):
        fetch_dataset("spider", dest, None, url_overrides={"spider": str(zip_path)}, manifest=man)
    assert (dest / singer).read_bytes() == (mirror / singer).read_bytes()
    assert (dest / wta).read_bytes() == b"wta bytes"
    verify_dataset("spider", dest, manifest=man)
    files = json.loads((dest / "spider" / RECORD_NAME).read_text())["files"]
    assert files[singer] == {
        "sha256": sha256_file(mirror / singer),
        "source": f"{zip_path.as_uri()}#spider_data/database/concert_singer/concert_singer.sqlite",
        "archive_sha256": sha256_file(zip_path),
        "status": "fetched",
    }
    zip_path.unlink()  # a second fetch must not download again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fetch_dataset("spider", dest, None, url_overrides={"spider": str(zip_path)}, manifest=man)


def test_spider_archive_checks_json_hashes(mirror: Path, tmp_path: Path) -> None:
    man = DatasetManifest(
        "spider", (FileEntry("spider/dev.json", "0" * 64),), archive_url=SPIDER_ZIP_URL
    )
    zip_path = tmp_path / "spider_data.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(mirror / "spider/dev.json", "spider_data/dev.json")
    with pytest.raises(DataError, match="spider: sha256 mismatch for spider/dev.json in archive"):
        fetch_dataset(
            "spider", tmp_path / "d", None, url_overrides={"spider": str(zip_path)}, manifest=man
        )


def test_archive_is_checked_against_its_pinned_hash(mirror: Path, tmp_path: Path) -> None:
    zip_path = tmp_path / "spider_data.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(mirror / "spider/dev.json", "spider_data/dev.json")
    dev = FileEntry("spider/dev.json", sha256_file(mirror / "spider/dev.json"))

    def fetch(archive_sha256: str, verified: bool = True) -> Path:
        man = DatasetManifest("spider", (dev,), SPIDER_ZIP_URL, archive_sha256, verified)
        return fetch_dataset(
            "spider", tmp_path / archive_sha256[:4], None,
            url_overrides={"spider": str(zip_path)}, manifest=man,
        )  # fmt: skip

    with pytest.raises(DataError, match="sha256 mismatch for the archive") as err:
        fetch("0" * 64)
    size = f"({zip_path.stat().st_size:,} bytes)"
    assert size in str(err.value) and "never checked" not in str(err.value)
    # A pin never checked against a real download says so, and what to do instead.
    with pytest.raises(DataError, match="sha256 mismatch for the archive") as err:
        fetch("1" * 64, verified=False)
    msg = str(err.value)
    assert size in msg and "never checked against a real download" in msg
    assert "data mirror" in msg and sha256_file(zip_path) in msg
    assert not (tmp_path / "1111" / "spider" / "dev.json").exists()
    assert (fetch(sha256_file(zip_path)) / "dev.json").is_file()


def test_downloads_are_retried(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    import urllib.request

    from specrepro.data import fetch as fetch_module

    real_urlopen = urllib.request.urlopen
    calls = []
    failures = 2  # then the server answers

    def flaky(url, timeout):
        calls.append(url)
        if len(calls) <= failures:
            raise ConnectionResetError("connection reset by peer")
        return real_urlopen((mirror / "mtbench" / "question.jsonl").as_uri(), timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    monkeypatch.setattr(fetch_module, "_RETRY_WAIT_S", 0.0)
    man = _manifest(mirror, "mtbench")
    url = "https://example.invalid/question.jsonl"
    overrides = {"mtbench": url}
    fetch_dataset("mtbench", tmp_path / "d", None, url_overrides=overrides, manifest=man)
    assert calls == [url] * 3 and fetch_module.DOWNLOAD_ATTEMPTS == 3

    calls.clear()
    monkeypatch.setattr(fetch_module, "DOWNLOAD_ATTEMPTS", 2)  # fewer tries than failures
    with pytest.raises(DataError, match="connection reset"):
        fetch_dataset("mtbench", tmp_path / "e", None, url_overrides=overrides, manifest=man)
    assert len(calls) == 2


def test_missing_mirror_folder_is_named(mirror: Path, tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.json").as_uri()
    man = DatasetManifest("squad", (FileEntry("squad/dev-v1.1.json", "0" * 64, url=url),))
    absent = tmp_path / "shared" / "data"
    with pytest.raises(DataError, match=f"the mirror folder {absent} does not exist"):
        fetch_dataset("squad", tmp_path / "data", absent, manifest=man)


def test_manifest_pins_every_download() -> None:
    for man in MANIFESTS.values():
        for entry in man.files:
            assert entry.url is None or "/main/" not in entry.url, entry.url
        if man.archive_url is not None:
            assert man.archive_sha256 is not None, man.name
    # Never downloaded here (no network): the Spider archive's pin must not pass as checked.
    assert not MANIFESTS["spider"].archive_sha256_verified


def test_spider_archive_not_a_zip(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html>virus scan warning</html>", encoding="utf-8")
    man = DatasetManifest(
        "spider", (FileEntry("spider/dev.json", "0" * 64),), archive_url=SPIDER_ZIP_URL
    )
    with pytest.raises(DataError, match="did not return a zip archive"):
        fetch_dataset(
            "spider", tmp_path / "d", None, url_overrides={"spider": str(page)}, manifest=man
        )
    assert not list((tmp_path / "d").rglob("*.part"))


# --- the fetch record (the fetch_data rule's output) ----------------------------------------


@pytest.fixture(scope="module")
def mirror_manifests(data_mirror: Path) -> dict[str, DatasetManifest]:
    """The built-in manifests for the real mirror, manifests of its own files for a tiny one."""
    if data_mirror == real_mirror_path():
        return dict(MANIFESTS)
    return {name: _manifest(data_mirror, name) for name in DATASET_NAMES}


def _files_state(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, sha256_file(p))
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != RECORD_NAME
    }


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_rerun_over_present_data_always_writes_the_record(
    name: str, data_mirror: Path, mirror_manifests: dict[str, DatasetManifest], tmp_path: Path
) -> None:
    man = mirror_manifests[name]
    dest = tmp_path / "data"
    record_path = dest / name / RECORD_NAME
    fetch_dataset(name, dest, data_mirror, manifest=man)
    first = json.loads(record_path.read_text())["files"]
    assert list(first) == sorted(e.path for e in man.files)
    for path, entry in first.items():
        assert entry == {
            "sha256": sha256_file(data_mirror / path),
            "source": str(data_mirror / path),
            "status": "fetched",
        }
    files = _files_state(dest / name)

    # A plain rerun fetches nothing, and still says what is there and where it came from.
    fetch_dataset(name, dest, data_mirror, manifest=man)
    second = json.loads(record_path.read_text())["files"]
    assert second == {p: {**e, "status": "present"} for p, e in first.items()}

    # A forced rerun: Snakemake deletes the job's output (the record) before running it.
    record_path.unlink()
    fetch_dataset(name, dest, data_mirror, manifest=man)
    third = json.loads(record_path.read_text())["files"]
    assert {p: e["sha256"] for p, e in third.items()} == {p: e["sha256"] for p, e in first.items()}
    assert {e["status"] for e in third.values()} == {"present"}
    assert all(e["source"].startswith("unknown") for e in third.values())
    assert _files_state(dest / name) == files  # nothing copied again
    verify_dataset(name, dest, manifest=man)


def test_fetch_data_command_rerun_after_snakemake_deleted_the_record(
    data_mirror: Path,
    mirror_manifests: dict[str, DatasetManifest],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from specrepro import cli

    # The command reads the built-in manifests; a tiny mirror's files need their own.
    monkeypatch.setitem(MANIFESTS, "mtbench", mirror_manifests["mtbench"])
    dest = tmp_path / "resources" / "data"
    config = write_tiny_config(
        tmp_path, tmp_path / "no-model", data={"mirror": str(data_mirror), "dir": str(dest)}
    )
    command = ["fetch-data", "--config", str(config), "--dataset", "mtbench"]
    record_path = dest / "mtbench" / RECORD_NAME
    assert cli.main(command) == 0
    files = _files_state(dest / "mtbench")
    record_path.unlink()
    assert cli.main(command) == 0
    assert json.loads(record_path.read_text())["files"]["mtbench/question.jsonl"] == {
        "sha256": sha256_file(data_mirror / "mtbench" / "question.jsonl"),
        "source": "unknown (already present, no earlier record)",
        "status": "present",
    }
    assert _files_state(dest / "mtbench") == files


def test_record_drops_a_lost_optional_file_and_keeps_sources(mirror: Path, tmp_path: Path) -> None:
    optional = FileEntry("spider/database/wta_1/wta_1.sqlite", None)
    man = DatasetManifest("spider", (*_manifest(mirror, "spider").files, optional))
    add_official_only_databases(mirror)
    dest = tmp_path / "data"
    fetch_dataset("spider", dest, mirror, manifest=man)
    record_path = dest / "spider" / RECORD_NAME
    assert json.loads(record_path.read_text())["files"][optional.path]["status"] == "fetched"
    (dest / optional.path).unlink()
    spider_db_file(mirror, "wta_1").unlink()
    fetch_dataset("spider", dest, mirror, manifest=man)
    files = json.loads(record_path.read_text())["files"]
    assert optional.path not in files  # only what is there is listed
    dev = files["spider/dev.json"]
    assert dev["source"] == str(mirror / "spider" / "dev.json") and dev["status"] == "present"


# --- one Spider sample whatever the source ---------------------------------------------------


def _official_layout(mirror: Path, root: Path) -> Path:
    """The mirror's Spider files plus the database only the official archive has (wta_1)."""
    (root / "spider" / "database").mkdir(parents=True)
    for name in ("dev.json", "tables.json"):
        (root / "spider" / name).symlink_to(mirror / "spider" / name)
    for db in (mirror / "spider" / "database").iterdir():
        (root / "spider" / "database" / db.name).symlink_to(db)
    add_official_only_databases(root)
    return root


def _ids(records: list) -> list[str]:
    return [r["question_id"] for r in records]


def test_spider_sample_same_from_mirror_and_official_archive(
    data_mirror: Path, tmp_path: Path
) -> None:
    official = _official_layout(data_mirror, tmp_path / "official")
    assert spider_db_available(official, "wta_1")
    assert not spider_db_available(data_mirror, "wta_1")
    dev = json.loads((data_mirror / "spider" / "dev.json").read_text())
    wta = {f"spider-{i}" for i, ex in enumerate(dev) if ex["db_id"] == "wta_1"}
    assert wta  # the two layouts really differ in what could be drawn

    assert spider_coverage(official) == spider_coverage(data_mirror)
    assert load_records("spider", official) == load_records("spider", data_mirror)
    for n, seed in ((2, 0), (3, 1), (5, 2), (8, 3), (12, 0)):
        sample = _ids(load_prompts("spider", data_mirror, n, seed))
        assert _ids(load_prompts("spider", official, n, seed)) == sample, (n, seed)
        assert not wta & set(sample)
    n_eval = {"spider": 3}
    assert load_training_prompts(["spider"], official, n_eval, 0, 4, 5) == (
        load_training_prompts(["spider"], data_mirror, n_eval, 0, 4, 5)
    )


def test_committed_spider_sample_from_mirror_and_official_archive(
    real_data_mirror: Path, tmp_path: Path
) -> None:
    official = _official_layout(real_data_mirror, tmp_path / "official")
    for root in (real_data_mirror, official):
        assert _ids(load_prompts("spider", root, 12, 0)) == COMMITTED_SPIDER_SAMPLE


# --- subsampling ----------------------------------------------------------------------------


def test_subsample_deterministic_and_order_independent() -> None:
    items = [{"question_id": f"q{i}"} for i in range(50)]
    a = subsample(items, 10, seed=3)
    assert a == subsample(items, 10, seed=3)
    assert len(a) == 10 and a == [x for x in items if x in a]  # original order kept
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    assert {x["question_id"] for x in subsample(shuffled, 10, seed=3)} == {
        x["question_id"] for x in a
    }
    assert subsample(items, 10, seed=4) != a
    assert subsample(items, None, seed=3) == items
    assert subsample(items, 500, seed=3) == items
    with pytest.raises(ValueError, match="duplicate"):
        subsample(items + items[:1], 5, seed=0)


def test_complement_is_disjoint() -> None:
    items = [{"question_id": i} for i in range(20)]
    chosen = subsample(items, 7, seed=1)
    rest = complement(items, chosen)
    ids = {x["question_id"] for x in chosen}
    assert not ids & {x["question_id"] for x in rest}
    assert len(rest) + len(chosen) == len(items)


def test_training_prompts_exclude_evaluated(mirror: Path) -> None:
    n_eval = {"mtbench": 1, "squad": 2, "spider": 1}
    train = load_training_prompts(["mtbench", "squad", "spider"], mirror, n_eval, 0, 100, 5)
    evaluated = {
        (d, r["question_id"]) for d, n in n_eval.items() for r in load_prompts(d, mirror, n, 0)
    }
    # Everything not evaluated; Spider only from the pinned databases present (not wta_1).
    assert len(train) == 2 + 1 + (9 - 1)
    assert {r["reference"]["db_id"] for r in train if r["dataset"] == "spider"} == {
        "concert_singer",
        "pets_1",
    }
    assert not evaluated & {(r["dataset"], r["question_id"]) for r in train}
    assert train == load_training_prompts(["spider", "squad", "mtbench"], mirror, n_eval, 0, 100, 5)
    small = load_training_prompts(["mtbench", "squad"], mirror, n_eval, 0, 2, 5)
    assert sorted(r["dataset"] for r in small) == ["mtbench", "squad"]  # split evenly
    with pytest.raises(DataError, match="n_eval"):
        load_training_prompts(["squad"], mirror, {}, 0, 2, 5)


def test_tuning_questions_are_neither_evaluated_nor_trained_on(mirror: Path) -> None:
    n_eval = {"mtbench": 1, "squad": 2, "spider": 1}
    n_tune = {"mtbench": 1, "squad": 1, "spider": 2}
    datasets = ["mtbench", "squad", "spider"]
    train = load_training_prompts(datasets, mirror, n_eval, 0, 100, 5, n_tune)
    every_train = load_training_prompts(datasets, mirror, n_eval, 0, 100, 5)
    keys = {(r["dataset"], r["question_id"]) for r in train}
    for d in datasets:
        tuning = load_tuning_prompts(d, mirror, n_eval[d], 0, n_tune[d])
        assert len(tuning) == n_tune[d]
        assert tuning == load_tuning_prompts(d, mirror, n_eval[d], 0, n_tune[d])  # seeded
        tuned = {(d, r["question_id"]) for r in tuning}
        evaluated = {(d, r["question_id"]) for r in load_prompts(d, mirror, n_eval[d], 0)}
        assert not tuned & evaluated and not tuned & keys
    # Only the tuning questions left the training prompts.
    assert len(every_train) - len(train) == sum(n_tune.values())
    assert load_tuning_prompts("squad", mirror, 2, 0, 0) == []


# --- loaders --------------------------------------------------------------------------------


def _check_shape(record: dict, dataset: str) -> None:
    assert list(record) == RECORD_KEYS
    assert isinstance(record["question_id"], str) and record["dataset"] == dataset
    assert record["turns"] and all(isinstance(t, str) for t in record["turns"])
    assert record["answer_format"] in ("free", "line", "sql") and isinstance(
        record["reference"], dict
    )
    json.dumps(record)


def test_mtbench_loader(mirror: Path) -> None:
    records = load_mtbench(mirror)
    assert [r["question_id"] for r in records] == ["1", "2", "3"]
    for r in records:
        _check_shape(r, "mtbench")
        assert len(r["turns"]) == 2 and r["few_shot"] == [] and r["answer_format"] == "free"
    assert records[1]["reference"] == {"category": "math", "reference": ["4", "6"]}
    assert records[0]["reference"] == {"category": "writing", "reference": None}


def test_squad_loader(mirror: Path) -> None:
    records = load_squad(mirror)
    assert [r["question_id"] for r in records] == ["q1", "q2", "q3"]
    r = records[0]
    _check_shape(r, "squad")
    assert r["answer_format"] == "line" and len(r["turns"]) == 1
    assert r["turns"][0] == (
        "Context: Pebbles are small round stones found on the beach at Orwin.\n"
        "Question: Where are pebbles found?\nAnswer:"
    )
    assert r["conversation"] == "completion"
    assert r["reference"] == {
        "answers": ["on the beach at Orwin", "beach at Orwin"],
        "title": "Pebbles",
    }
    (shot,) = r["few_shot"]
    assert shot["user"].startswith("Context: ") and shot["user"].endswith("\nAnswer:")
    assert shot["assistant"] and "\n" not in shot["assistant"]
    assert shot["assistant"] in shot["user"]


def test_spider_loader_skips_missing_databases(mirror: Path) -> None:
    # 12 questions: 5 on concert_singer, 4 on pets_1, 3 on wta_1 (no database, as in the mirror).
    assert spider_coverage(mirror) == {"n_total": 12, "n_available": 9, "skipped": {"wta_1": 3}}
    records = load_spider(mirror)
    assert [r["question_id"] for r in records] == [
        f"spider-{i}" for i in (0, 2, 3, 5, 6, 8, 9, 10, 11)
    ]
    assert not (mirror / "spider" / "database" / "wta_1").exists()  # never created
    r = records[0]
    _check_shape(r, "spider")
    assert r["answer_format"] == "sql" and r["few_shot"] == []
    assert r["reference"] == {"db_id": "concert_singer", "gold_sql": "SELECT count(*) FROM singer"}
    lines = r["turns"][0].splitlines()
    assert "singer(singer_id, name, age)" in lines
    assert "singer_in_concert(concert_id, singer_id)" in lines
    assert "singer_in_concert.singer_id = singer.singer_id" in lines
    assert "Question: How many singers do we have?" in lines
    assert lines[-1] == "Write one SQLite query on one line that answers the question."
    # An empty file left behind by sqlite3.connect is not a database.
    pets = spider_db_path(mirror, "pets_1")
    pets.write_bytes(b"")
    assert spider_coverage(mirror)["skipped"] == {"pets_1": 4, "wta_1": 3}
    assert {r["reference"]["db_id"] for r in load_spider(mirror)} == {"concert_singer"}


def test_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="squad/dev-v1.1.json"):
        load_squad(tmp_path)


# --- prompt JSONL ---------------------------------------------------------------------------


def test_jsonl_roundtrip_and_plain_mtbench(mirror: Path, tmp_path: Path) -> None:
    records = load_prompts("squad", mirror, 2, seed=0)
    path = tmp_path / "out" / "prompts.jsonl"
    write_jsonl(records, path)
    assert read_prompts_jsonl(path) == records
    plain = read_prompts_jsonl(mirror / "mtbench" / "question.jsonl")
    assert plain == load_records("mtbench", mirror)


def test_read_prompts_jsonl_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    good = json.dumps({"question_id": "a", "turns": ["hi"]})
    for bad in (
        "{not json",
        json.dumps({"question_id": "b", "turns": []}),
        json.dumps({"turns": ["x"]}),
        json.dumps({"question_id": "c", "turns": [1]}),
        good,
    ):
        path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=f"{path}:2"):
            read_prompts_jsonl(path)


# --- the real mirror ------------------------------------------------------------------------


def test_real_mirror(real_data_mirror: Path, tmp_path: Path) -> None:
    for name in ("mtbench", "squad", "spider"):
        verify_dataset(name, real_data_mirror)
        fetch_dataset(name, tmp_path, real_data_mirror)
        verify_dataset(name, tmp_path)
    mt = load_records("mtbench", real_data_mirror)
    assert len(mt) == 80 and all(len(r["turns"]) == 2 for r in mt)
    assert len(load_records("squad", real_data_mirror)) == 10570
    cov = spider_coverage(real_data_mirror)
    assert cov == {"n_total": 1034, "n_available": 972, "skipped": {"wta_1": 62}}
    assert len(load_records("spider", real_data_mirror)) == 972
