"""Data layer: fetching with sha256 checks, loaders, subsampling, prompt JSONL (no network)."""

from __future__ import annotations

import json
import random
import sqlite3
import warnings
import zipfile
from pathlib import Path

import pytest

from specrepro.data import (
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
    read_prompts_jsonl,
    sha256_file,
    spider_coverage,
    subsample,
    verify_dataset,
    write_jsonl,
)

SPIDER_ZIP_URL = "https://example.invalid/spider_data.zip"  # always overridden by a local zip
REAL_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
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

MTBENCH_QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Now a limerick."]},
    {
        "question_id": 2,
        "category": "math",
        "turns": ["What is 2+2?", "And 3+3?"],
        "reference": ["4", "6"],
    },
    {"question_id": 3, "category": "coding", "turns": ["Reverse a list.", "In C."]},
]

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Pebbles",
            "paragraphs": [
                {
                    "context": "Pebbles are small round stones found on the beach at Orwin.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Where are pebbles found?",
                            "answers": [
                                {"answer_start": 40, "text": "on the beach at Orwin"},
                                {"answer_start": 47, "text": "beach at Orwin"},
                            ],
                        },
                        {
                            "id": "q2",
                            "question": "What shape are pebbles?",
                            "answers": [{"answer_start": 17, "text": "round"}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Kites",
            "paragraphs": [
                {
                    "context": "The red kite flew over the hill in 1999.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "When did the kite fly?",
                            "answers": [{"answer_start": 35, "text": "1999"}],
                        },
                    ],
                }
            ],
        },
    ],
}

SPIDER_DEV = [
    {
        "db_id": "shop",
        "question": "How many items are there?",
        "query": "SELECT count(*) FROM item",
    },
    {"db_id": "zoo", "question": "List all animals.", "query": "SELECT name FROM animal"},
    {
        "db_id": "shop",
        "question": "Names of items sold in orders?",
        "query": "SELECT T1.name FROM item AS T1 JOIN orders AS T2 ON T1.id = T2.item_id",
    },
]

SPIDER_TABLES = [
    {
        "db_id": "shop",
        "table_names_original": ["item", "orders"],
        "column_names_original": [
            [-1, "*"],
            [0, "id"],
            [0, "name"],
            [1, "order_id"],
            [1, "item_id"],
        ],
        "foreign_keys": [[4, 1]],
    },
    {
        "db_id": "zoo",
        "table_names_original": ["animal"],
        "column_names_original": [[-1, "*"], [0, "name"]],
        "foreign_keys": [],
    },
]


def _make_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("CREATE TABLE orders (order_id INTEGER, item_id INTEGER)")
    con.executemany("INSERT INTO item VALUES (?, ?)", [(1, "pen"), (2, "cup")])
    con.commit()
    con.close()


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / "mtbench").mkdir(parents=True)
    (root / "mtbench" / "question.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in MTBENCH_QUESTIONS), encoding="utf-8"
    )
    (root / "squad").mkdir()
    (root / "squad" / "dev-v1.1.json").write_text(json.dumps(SQUAD), encoding="utf-8")
    (root / "spider").mkdir()
    (root / "spider" / "dev.json").write_text(json.dumps(SPIDER_DEV), encoding="utf-8")
    (root / "spider" / "tables.json").write_text(json.dumps(SPIDER_TABLES), encoding="utf-8")
    _make_sqlite(root / "spider" / "database" / "shop" / "shop.sqlite")
    return root


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
        (*_manifest(mirror, "spider").files, FileEntry("spider/database/zoo/zoo.sqlite", None)),
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
    shop = "spider/database/shop/shop.sqlite"
    zoo = "spider/database/zoo/zoo.sqlite"
    man = DatasetManifest(
        "spider",
        (
            FileEntry("spider/dev.json", sha256_file(mirror / "spider/dev.json")),
            FileEntry("spider/tables.json", sha256_file(mirror / "spider/tables.json")),
            # The mirror's copy differs from the archive's, as for the recovered databases.
            FileEntry(shop, "f" * 64, mirror_hash_only=True),
            FileEntry(zoo, None),
        ),
        archive_url=SPIDER_ZIP_URL,
    )
    zip_path = tmp_path / "spider_data.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for rel in ("spider/dev.json", "spider/tables.json", shop):
            zf.write(mirror / rel, "spider_data/" + rel.removeprefix("spider/"))
        zf.writestr("spider_data/database/zoo/zoo.sqlite", b"zoo bytes")
        zf.writestr("__MACOSX/spider_data/dev.json", b"junk")
    dest = tmp_path / "data"
    with pytest.warns(DataWarning, match="shop.sqlite"):
        fetch_dataset("spider", dest, None, url_overrides={"spider": str(zip_path)}, manifest=man)
    assert (dest / shop).read_bytes() == (mirror / shop).read_bytes()
    assert (dest / zoo).read_bytes() == b"zoo bytes"
    verify_dataset("spider", dest, manifest=man)
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

    def fetch(archive_sha256: str) -> Path:
        man = DatasetManifest("spider", (dev,), SPIDER_ZIP_URL, archive_sha256)
        return fetch_dataset(
            "spider", tmp_path / archive_sha256[:4], None,
            url_overrides={"spider": str(zip_path)}, manifest=man,
        )  # fmt: skip

    with pytest.raises(DataError, match="sha256 mismatch for the archive"):
        fetch("0" * 64)
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
    from specrepro.data.manifest import MANIFESTS

    for man in MANIFESTS.values():
        for entry in man.files:
            assert entry.url is None or "/main/" not in entry.url, entry.url
        if man.archive_url is not None:
            assert man.archive_sha256 is not None, man.name


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
    assert len(train) == 2 + 1 + 1  # everything not evaluated, spider only from shop
    assert not evaluated & {(r["dataset"], r["question_id"]) for r in train}
    assert train == load_training_prompts(["spider", "squad", "mtbench"], mirror, n_eval, 0, 100, 5)
    small = load_training_prompts(["mtbench", "squad"], mirror, n_eval, 0, 2, 5)
    assert sorted(r["dataset"] for r in small) == ["mtbench", "squad"]  # split evenly
    with pytest.raises(DataError, match="n_eval"):
        load_training_prompts(["squad"], mirror, {}, 0, 2, 5)


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
    assert spider_coverage(mirror) == {"n_total": 3, "n_available": 2, "skipped": {"zoo": 1}}
    records = load_spider(mirror)
    assert [r["question_id"] for r in records] == ["spider-0", "spider-2"]
    assert not (mirror / "spider" / "database" / "zoo").exists()  # never created
    r = records[0]
    _check_shape(r, "spider")
    assert r["answer_format"] == "sql" and r["few_shot"] == []
    assert r["reference"] == {"db_id": "shop", "gold_sql": "SELECT count(*) FROM item"}
    lines = r["turns"][0].splitlines()
    assert "item(id, name)" in lines and "orders(order_id, item_id)" in lines
    assert "orders.item_id = item.id" in lines
    assert "Question: How many items are there?" in lines
    assert lines[-1] == "Write one SQLite query on one line that answers the question."
    # An empty file left behind by sqlite3.connect is not a database.
    (mirror / "spider" / "database" / "zoo").mkdir(parents=True)
    (mirror / "spider" / "database" / "zoo" / "zoo.sqlite").touch()
    assert spider_coverage(mirror)["skipped"] == {"zoo": 1}


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


@pytest.mark.skipif(not REAL_MIRROR.is_dir(), reason="shared data mirror not present")
def test_real_mirror(tmp_path: Path) -> None:
    for name in ("mtbench", "squad", "spider"):
        verify_dataset(name, REAL_MIRROR)
        fetch_dataset(name, tmp_path, REAL_MIRROR)
        verify_dataset(name, tmp_path)
    mt = load_records("mtbench", REAL_MIRROR)
    assert len(mt) == 80 and all(len(r["turns"]) == 2 for r in mt)
    assert len(load_records("squad", REAL_MIRROR)) == 10570
    cov = spider_coverage(REAL_MIRROR)
    assert cov == {"n_total": 1034, "n_available": 972, "skipped": {"wta_1": 62}}
    assert len(load_records("spider", REAL_MIRROR)) == 972
