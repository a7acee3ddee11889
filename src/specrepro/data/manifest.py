"""Files, sha256 hashes and official download URLs of the benchmark datasets.

Paths are relative to a data folder laid out like the mirror (docs/data.md):
`<dataset>/<file>`. Only hashes live here; the data itself is never committed.
"""

from __future__ import annotations

from dataclasses import dataclass

SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
# Pinned to the FastChat commit that last changed the file, never a moving branch.
MTBENCH_URL = (
    "https://raw.githubusercontent.com/lm-sys/FastChat/b494d0c6b4e7935f1764f8439e75da3e66beccc7/"
    "fastchat/llm_judge/data/mt_bench/question.jsonl"
)
# spider_data.zip of the official release (Google Drive file 1403EGqz..., 205,800,266 bytes);
# the usercontent host with confirm=t skips Drive's "cannot scan for viruses" page.
SPIDER_ZIP_URL = (
    "https://drive.usercontent.google.com/download"
    "?id=1403EGqzIDoHMdQF4c9Bkyl7dZLZ5Wt6J&export=download&confirm=t"
)
# UNVERIFIED by this project: the archive was never downloaded where the project was built (no
# network), and the publisher gives no hash. This is the sha256 that several independent public
# records of the 205,800,266-byte download give; the same records give the mirror's dev.json
# and tables.json hashes for the archive's copies, which are checked on their own anyway.
# The mirror's provenance (docs/data.md) has no hash for the archive: the mirror was not built
# from it.
SPIDER_ZIP_SHA256 = "00636695dabed6b5f4b8328a16b13e069a2f16591d5efcce57660669c85b121b"


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset.

    sha256 None marks an optional file with no known hash (only fetched from an archive).
    mirror_hash_only marks a hash taken from the mirror's recovered copy: a copy from the
    official archive may legitimately differ and is then accepted with a warning.
    """

    path: str
    sha256: str | None
    url: str | None = None
    mirror_hash_only: bool = False


@dataclass(frozen=True)
class DatasetManifest:
    """A dataset: its files and, when they come packed, the archive holding them (whose
    sha256, when known, vouches for every file taken from it)."""

    name: str
    files: tuple[FileEntry, ...]
    archive_url: str | None = None
    archive_sha256: str | None = None
    # False when the pin was never checked against a real download: a mismatch then says so.
    archive_sha256_verified: bool = True


SPIDER_SQLITE_SHA256: dict[str, str] = {
    "battle_death": "761584600d7ba0cc4f7af8b8a4d2f5d09a5d7772612166aea262d9fb52a6ec3d",
    "car_1": "9d95a7c611e63281fd1ecd01f7b3d5647ddf518cd68e4959b2c92d2b24df50ca",
    "concert_singer": "42d9d578182cdd094adcdf794222f05e65f11b9615a8e95fa61c48f1f8ca739b",
    "course_teach": "f2fd67fdb3b108cb6a4207cb23224d7b312287dd8f92f2d77ee64387f2159d71",
    "cre_Doc_Template_Mgt": "3e878fc85d266761527c58fb2508b1032d6947316b4350324cd4925952b5ca89",
    "dog_kennels": "8b220b090fe9504133783653fa71ae2da61b37c5c63debf2dfa8d4a3d3d39d9f",
    "employee_hire_evaluation": "8700c9e5447221183c11cda02bb5626620bb82734887718e902790242b0f9255",
    "flight_2": "483d5ee4ccbca7329d0459df9c4783a0d93cd4835c57bb433c0839818899f74b",
    "museum_visit": "87159aa1c21c7060b353f1fdc081569ddce65f4f4ce7e09433bba4f00b083031",
    "network_1": "73ac0813c19d915f71ad49adb79ccf12e4b3ae830bfad0d30131417736fc3495",
    "orchestra": "f9cfb2470d5970c8f0124ee36b9e839443acd1f6fa77cf6ab99c8db9f04a2b0e",
    "pets_1": "de77ede01db0d7408efabd82061041045daf6bfd6ef6768da8638c07ac54986a",
    "poker_player": "1efb5529a8d82d601b33c779c7bfb42f11d149db3a976c7a4771fcc8a714be54",
    "real_estate_properties": "642d04857479ef2aeca47adcaede3c4a33ffb7de22be517996472cb912bf1505",
    "singer": "0cc85aa30f4effd4e8255af963b8340fa2870b688c725574f4feaa0a097153ef",
    "student_transcripts_tracking": (
        "87244e3856325559dc280cdf722ac7ac96101dfaf7b79f1aa0c3920a14aa3b25"
    ),
    "tvshow": "3255a1ccbd4601656129c0f56e18f7551e35eab1b64b35e22c6f05dd03d36a8c",
    "voter_1": "a4e011628c7ae43136fc271e06300b781698ac10d327e43b7e1bb10f08c8a311",
    "world_1": "9c9e19249f0e81b892410a3f3f6b7c47d59ae1381476696582e69fef25a6d511",
}

# The fixed universe Spider questions are drawn from: the dev questions on these databases, the
# 19 the mirror holds. The official archive also holds wta_1 (62 dev questions); drawing from
# whatever databases happen to be present would give another seeded sample (and other training
# prompts) from the archive than from the mirror, so numbers would not match the committed
# figures. wta_1 is therefore outside the universe, whichever source the data came from.
SPIDER_SAMPLE_DBS: tuple[str, ...] = tuple(sorted(SPIDER_SQLITE_SHA256))


def spider_sqlite_path(db_id: str) -> str:
    """Relative path of a Spider database inside a data folder."""
    return f"spider/database/{db_id}/{db_id}.sqlite"


MTBENCH = DatasetManifest(
    name="mtbench",
    files=(
        FileEntry(
            "mtbench/question.jsonl",
            "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
            url=MTBENCH_URL,
        ),
    ),
)

SQUAD = DatasetManifest(
    name="squad",
    files=(
        FileEntry(
            "squad/dev-v1.1.json",
            "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
            url=SQUAD_URL,
        ),
    ),
)

SPIDER = DatasetManifest(
    name="spider",
    files=(
        FileEntry(
            "spider/dev.json", "30d64a3fccde493226df79687aed9e4a1c0129525baf44f29c0573d914d758a4"
        ),
        FileEntry(
            "spider/tables.json",
            "61bb20aa401f03164e2d7f3b16509b7b5f79cc9c943ca7bd159046df1159e2ed",
        ),
        *(
            FileEntry(spider_sqlite_path(db), sha, mirror_hash_only=True)
            for db, sha in SPIDER_SQLITE_SHA256.items()
        ),
    ),
    archive_url=SPIDER_ZIP_URL,
    archive_sha256=SPIDER_ZIP_SHA256,
    archive_sha256_verified=False,
)

MANIFESTS: dict[str, DatasetManifest] = {m.name: m for m in (MTBENCH, SQUAD, SPIDER)}
DATASET_NAMES: tuple[str, ...] = tuple(MANIFESTS)
