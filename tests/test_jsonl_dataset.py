"""A dataset of one's own: a `kind: jsonl` config entry naming a JSON Lines file of prompt
records and a named scorer (docs/data.md#your-own-dataset), from the config check through the
prompts command, the splits, the scorers and the tidy table to the plan and the workflow."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from specrepro import cli
from specrepro.config import ConfigError, load_config
from specrepro.data import DataError, fetch_jsonl_dataset, read_prompts_jsonl
from specrepro.data.prompts import (
    load_prompts,
    load_records,
    load_training_prompts,
    load_tuning_prompts,
)
from specrepro.metrics.scorers import (
    BUILTIN_SCORERS,
    SCORER_NAMES,
    ScoreContext,
    dataset_scorer,
    get_scorer,
    score_answer,
)
from specrepro.planning import make_plan
from specrepro.planning.cost import cost_table_markdown, job_costs
from specrepro.planning.datasets import KINDS
from specrepro.report.tables import scorers_of, table_columns, write_dataset_tables
from specrepro.report.tidy import coverage_notes, tidy_table
from tests.conftest import DEFAULT_CONFIG, REPO, copy_workflow

QUESTIONS = [(f"q{i}", f"Question {i}?", [f"answer {i}", f"alt {i}"]) for i in range(8)]
ENTRY = {
    "kind": "jsonl",
    "path": "data/myqa.jsonl",
    "scorer": "squad_em_f1",
    "n": 3,
    "max_new_tokens": 8,
    "tuning": 2,
}


def write_questions(path: Path, questions=QUESTIONS, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for qid, question, answers in questions:
            record = {"question_id": qid, "turns": [question], "answer_format": "line"}
            record |= {"reference": {"answers": answers}, "dataset": "ignored", **extra}
            f.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding data/myqa.jsonl, the path the entry names relatively."""
    monkeypatch.chdir(tmp_path)
    write_questions(tmp_path / "data" / "myqa.jsonl")
    return tmp_path


DROP = "<drop>"


def own_config(tmp_path: Path, **entry) -> Path:
    """A config merged over the default that adds `myqa` ({**ENTRY, **entry}; DROP drops a key)."""
    entry = {k: v for k, v in {**ENTRY, **entry}.items() if v != DROP}
    config = {"data": {"dir": str(tmp_path / "resources"), "mirror": None}}
    config["datasets"] = {"myqa": entry}
    path = tmp_path / "myqa.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def loaded(tmp_path: Path, **entry) -> dict:
    return load_config([DEFAULT_CONFIG, own_config(tmp_path, **entry)])


# --- loading and the splits -----------------------------------------------------------------


def test_the_prompts_command_writes_the_evaluated_subsample(workdir: Path) -> None:
    config = own_config(workdir)
    out = workdir / "prompts.jsonl"
    argv = ["prompts", "--config", str(DEFAULT_CONFIG), "--config", str(config)]
    assert cli.main([*argv, "--dataset", "myqa", "--out", str(out)]) == 0
    records = read_prompts_jsonl(out)
    assert len(records) == 3 and {r["dataset"] for r in records} == {"myqa"}
    # The same subsample the library draws, in file order, each record as the file wrote it.
    entry = loaded(workdir)["datasets"]["myqa"]
    assert records == load_prompts("myqa", workdir / "resources", 3, 0, entry)
    ids = [r["question_id"] for r in records]
    assert ids == sorted(ids, key=lambda q: int(q[1:]))
    golds = {qid: answers for qid, _, answers in QUESTIONS}
    assert all(r["reference"] == {"answers": golds[r["question_id"]]} for r in records)
    assert all(r["answer_format"] == "line" for r in records)


def test_evaluated_tuning_and_training_questions_are_disjoint(workdir: Path) -> None:
    entry, data = dict(ENTRY), workdir / "resources"
    evaluated = load_prompts("myqa", data, 3, 0, entry)
    tuning = load_tuning_prompts("myqa", data, 3, 0, 2, entry)
    training = load_training_prompts(["myqa"], data, {"myqa": 3}, 0, 100, 0, {"myqa": 2},
                                     {"myqa": entry})  # fmt: skip
    ids = [{r["question_id"] for r in part} for part in (evaluated, tuning, training)]
    assert [len(part) for part in ids] == [3, 2, 3]
    assert set.union(*ids) == {qid for qid, _, _ in QUESTIONS}
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # Seeded: the same split again.
    assert load_tuning_prompts("myqa", data, 3, 0, 2, entry) == tuning


def test_the_fetch_step_checks_hashes_and_names_the_file(workdir: Path) -> None:
    root = fetch_jsonl_dataset("myqa", ENTRY, workdir / "resources")
    record = json.loads((root / "fetch_record.json").read_text())
    from specrepro.data import sha256_file

    sha = sha256_file(workdir / "data" / "myqa.jsonl")
    assert record["files"]["data/myqa.jsonl"] == {
        "sha256": sha, "source": str((workdir / "data" / "myqa.jsonl").resolve()),
        "status": "read in place", "records": len(QUESTIONS),
    }  # fmt: skip
    # A command given no config entry (tune-trees) finds the file through the fetch record.
    assert load_records("myqa", workdir / "resources") == load_records(
        "myqa", workdir / "resources", ENTRY
    )


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "csv"}, r"datasets/myqa/kind: 'csv' is not one of .*'jsonl'"),
        ({"kind": DROP}, r"datasets.myqa: not a built-in dataset .*kind: jsonl"),
        ({"scorer": "bleu"}, r"'bleu' is not one of \['exact_match', 'f1', 'none', "),
        ({"path": DROP}, r"datasets.myqa: kind jsonl needs `path`"),
        ({"scorer": "spider_exec"}, r"spider_exec .* scores only it; .* exact_match, f1, none"),
    ],
)
def test_a_malformed_entry_is_named(tmp_path: Path, entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        loaded(tmp_path, **entry)


def test_built_in_datasets_keep_their_files_and_scorers(tmp_path: Path) -> None:
    def config_with(datasets: dict) -> Path:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"datasets": datasets}))
        return path

    squad = {"n": 2, "max_new_tokens": 8}
    for datasets, message in [
        ({"squad": {**squad, "path": "x.jsonl"}}, "`path` is for kind jsonl only"),
        ({"squad": {**squad, "scorer": "f1"}}, "the built-in squad is scored by squad_em_f1"),
        ({"big": {**squad, "kind": "squad"}}, "kind 'squad' is the built-in dataset named"),
        ({"squad": {**squad, "kind": "jsonl", "path": "x"}}, "a built-in dataset's name"),
        ({"My-QA": {**ENTRY}}, r"must match \^\[a-z\]\[a-z0-9_\]\*\$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config([DEFAULT_CONFIG, config_with(datasets)])
    explicit = load_config([DEFAULT_CONFIG, config_with({"squad": {**squad, "kind": "squad"}})])
    assert dataset_scorer("squad", explicit["datasets"]["squad"]).name == "squad_em_f1"


def test_a_missing_or_broken_file_is_named(workdir: Path) -> None:
    dest = workdir / "resources"
    with pytest.raises(DataError, match=r"data/absent.jsonl .*does not exist"):
        fetch_jsonl_dataset("myqa", {**ENTRY, "path": "data/absent.jsonl"}, dest)
    broken = workdir / "data" / "broken.jsonl"
    broken.write_text((workdir / "data" / "myqa.jsonl").read_text() + "{not json\n")
    with pytest.raises(DataError, match=f"{broken.name}:9: invalid prompt record"):
        fetch_jsonl_dataset("myqa", {**ENTRY, "path": str(broken)}, dest)
    twice = write_questions(workdir / "data" / "twice.jsonl", QUESTIONS[:2] + QUESTIONS[:1])
    with pytest.raises(DataError, match=f"{twice}:3: duplicate question_id 'q0'"):
        load_records("myqa", dest, {**ENTRY, "path": str(twice)})


def test_a_record_without_answers_is_named_when_the_scorer_needs_them(workdir: Path) -> None:
    path = workdir / "data" / "free.jsonl"
    lines = [{"question_id": "a", "turns": ["Say hi."], "reference": {"answers": ["hi"]}},
             {"question_id": "b", "turns": ["Write a poem."]}]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for scorer in ("exact_match", "f1", "squad_em_f1"):
        entry = {**ENTRY, "path": str(path), "scorer": scorer}
        with pytest.raises(DataError, match=f"{path}:2: question 'b': scorer {scorer} needs "
                                            "reference.answers"):  # fmt: skip
            load_records("myqa", workdir, entry)
    # Free text needs no answers.
    assert len(load_records("myqa", workdir, {**ENTRY, "path": str(path), "scorer": "none"})) == 2


def test_an_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagenet.*mtbench, squad, spider.*kind: jsonl"):
        load_records("imagenet", tmp_path)
    with pytest.raises(ValueError, match="unknown scorer 'bleu'; scorers: exact_match, f1, none"):
        get_scorer("bleu")


# --- the scorers --------------------------------------------------------------------------------


def scores(scorer: str, text: str, answers: list[str]) -> dict:
    ctx = ScoreContext(Path("."))
    return score_answer(get_scorer(scorer), text, {"answers": answers}, ctx)


def test_the_scorers_by_hand() -> None:
    # Official normalisation: case, punctuation and articles go ("The Paris." -> "paris").
    assert scores("exact_match", "The Paris.", ["Lyon", "paris"])["em"] == 1.0
    assert scores("exact_match", "Lyon, France", ["Paris"])["em"] == 0.0
    # "the big red dog" -> {big, red, dog} against {red, dog}: P 2/3, R 1, F1 0.8; "cat" gives 0.
    got = scores("f1", "the big red dog", ["cat", "a red dog"])
    assert got["f1"] == pytest.approx(0.8) and got["em"] is None
    # The answer is the first content line, as SQuAD's; EM and F1 together.
    both = scores("squad_em_f1", "\nred dog\nmore text", ["red dog"])
    assert (both["em"], both["f1"]) == (1.0, 1.0)
    assert all(v is None for v in scores("none", "anything", ["x"]).values())
    # Each declares its columns: the table shows them, whatever the dataset is called.
    assert get_scorer("exact_match").table_columns == ("em",)
    assert get_scorer("f1").table_columns == ("f1",)


def test_built_in_datasets_keep_their_scores_and_columns() -> None:
    assert BUILTIN_SCORERS == {"mtbench": "none", "squad": "squad_em_f1", "spider": "spider_exec"}
    columns = {d: get_scorer(s).table_columns for d, s in BUILTIN_SCORERS.items()}
    assert columns == {"mtbench": (), "squad": ("em", "f1"),
                       "spider": ("exec_acc", "n_exec_excluded")}  # fmt: skip
    # The schema's names are the registry's and the plan's.
    schema = yaml.safe_load((REPO / "src" / "specrepro" / "config.schema.yaml").read_text())
    entry = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    assert tuple(entry["scorer"]["enum"]) == SCORER_NAMES
    assert tuple(entry["kind"]["enum"]) == KINDS


# --- the tidy table and the dataset table -------------------------------------------------------


def raw_result(path: Path, dataset: str, answers: dict[str, str], golds: dict[str, list]) -> Path:
    """A result file of one vanilla run: a metadata line, then one record per question."""
    meta = {"record": "meta", "pair": "tiny", "method": "vanilla", "algorithm": "vanilla",
            "dtype": "float32", "temperature": 0.0, "seed": 0, "device": "cpu"}  # fmt: skip
    turn = {"token_ids": [1, 2], "new_tokens": 2, "wall_time": 0.1, "target_forwards": 2,
            "verify_forwards": 1, "verified_tokens": 1, "draft_forwards": 0,
            "accept_lengths": [1], "kv_bytes_peak": 0, "target_loglik": -1.0,
            "time_draft": 0.0, "time_verify": 0.1, "time_other": 0.0}  # fmt: skip
    lines = [meta] + [
        {"pair": "tiny", "method": "vanilla", "dataset": dataset, "question_id": qid,
         "turns": [{**turn, "text": text}], "reference": {"answers": golds[qid]}}
        for qid, text in answers.items()
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_jsonl_datasets_rows_are_scored_by_its_scorer(tmp_path: Path) -> None:
    golds = {"a": ["Paris"], "b": ["red dog"]}
    raw = raw_result(tmp_path / "raw" / "tiny" / "myqa" / "T0.0-s0.jsonl", "myqa",
                     {"a": "Paris\nbecause", "b": "the big red dog"}, golds)  # fmt: skip
    tidy = tidy_table([raw], tmp_path, {"myqa": "exact_match"}).set_index("question_id")
    assert tidy["em"].to_dict() == {"a": 1.0, "b": 0.0}
    assert tidy["f1"].isna().all() and set(tidy["scorer"]) == {"exact_match"}
    tidy = tidy_table([raw], tmp_path, {"myqa": "squad_em_f1"}).set_index("question_id")
    assert tidy["f1"].to_dict() == {"a": 1.0, "b": pytest.approx(0.8)}
    # Without a scorer named for it, a dataset of one's own is not scored.
    assert tidy_table([raw], tmp_path)[["em", "f1"]].isna().all().all()
    notes = coverage_notes(["myqa"], tmp_path, {"myqa": "squad_em_f1"})
    assert notes["myqa"].startswith("Scored by squad_em_f1: exact match and token F1")


def test_the_table_shows_the_scorers_columns(tmp_path: Path) -> None:
    from specrepro.report.aggregate import summarise
    from tests.test_report import make_tidy

    tidy = make_tidy()
    tidy["dataset"] = tidy["dataset"].replace({"squad": "myqa"})
    tidy["scorer"] = tidy["dataset"].map({"myqa": "exact_match", "mtbench": "none"})
    summary = summarise(tidy)
    rows = summary[summary["dataset"] == "myqa"]
    names = [c.markdown for c in table_columns("myqa", rows, scorer="exact_match")]
    assert "EM (%)" in names and "F1 (%)" not in names
    assert scorers_of(tidy) == {"myqa": "exact_match", "mtbench": "none"}
    write_dataset_tables(summary, tmp_path, scorers=scorers_of(tidy))
    table = (tmp_path / "table_myqa.md").read_text()
    assert "EM (%)" in table and "F1 (%)" not in table
    # A built-in dataset's columns are its own, with or without the tidy table's word.
    squad = [c.markdown for c in table_columns("squad", rows)]
    assert "EM (%)" in squad and "F1 (%)" in squad


# --- the plan and the workflow ----------------------------------------------------------------


def test_the_plan_reads_the_file_and_leaves_the_built_ins_jobs_as_they_were(workdir: Path) -> None:
    config = loaded(workdir, n=None)
    config["runs"]["datasets"] = ["mtbench", "squad", "spider", "myqa"]
    plan = make_plan(config)
    entries = {d: json.loads(plan.entries("fetch_data")(SimpleNamespace(dataset=d)))
               for d in ("squad", "myqa")}  # fmt: skip
    assert entries["squad"] == {"data": config["data"]}
    assert entries["myqa"]["datasets.myqa.path"] == "data/myqa.jsonl"
    tidy = json.loads(plan.entries("tidy")(SimpleNamespace()))
    assert tidy["datasets.myqa.scorer"] == "squad_em_f1"
    # n null: the whole file, 8 records of one turn each.
    rows = [c for c in job_costs(plan) if c.rule == "generate" and "/myqa/" in c.job]
    assert rows and all(c.tokens is not None for c in rows)
    repeats, warmup = config["runs"].get("repeats", 1), config["runs"].get("warmup", 1) * 8
    assert all(c.tokens == c.runs * (len(QUESTIONS) * 8 * repeats + warmup) for c in rows)
    # A file the plan cannot read: its size is unknown, said so, never guessed.
    (workdir / "data" / "myqa.jsonl").unlink()
    costs = job_costs(make_plan(config))
    assert any(c.tokens is None for c in costs)
    assert "Tokens ?: a jsonl dataset" in cost_table_markdown("myqa", costs)


def test_a_dry_run_plans_the_datasets_fetch_and_prompts(tmp_path: Path) -> None:
    from tests.test_workflow import planned_jobs, snakemake

    workdir = copy_workflow(tmp_path)
    write_questions(workdir / "ext" / "myqa.jsonl")
    config = {"datasets": {"myqa": {**ENTRY, "path": "ext/myqa.jsonl"}},
              "runs": {"datasets": ["mtbench", "squad", "spider", "myqa"]}}  # fmt: skip
    (workdir / "config" / "myqa.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-p", "--configfile", "config/myqa.yaml", cwd=workdir)
    jobs = planned_jobs(result)
    assert jobs["fetch_data"] == 4 and jobs["prompts"] == 4, jobs
    assert "input: ext/myqa.jsonl" in result.stdout
    assert "--dataset myqa --out results/myqa/prompts/myqa.jsonl" in result.stdout
    # A jsonl entry without its file is named before any job runs.
    del config["datasets"]["myqa"]["path"]
    (workdir / "config" / "myqa.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "config/myqa.yaml", cwd=workdir)
    assert result.returncode != 0
    assert "datasets.myqa: kind jsonl needs `path`" in result.stdout + result.stderr


def test_the_documented_example_loads_and_validates(tmp_path: Path, monkeypatch) -> None:
    """docs/data.md's example file and config, as a user copies them."""
    page = (REPO / "docs" / "data.md").read_text().split("## Your own dataset", 1)[1]
    records = page.split("```json\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(page.split("```yaml\n", 1)[1].split("```", 1)[0])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "myqa.jsonl").write_text(records)
    (tmp_path / "myqa.yaml").write_text(yaml.safe_dump(config))
    entry = load_config([DEFAULT_CONFIG, tmp_path / "myqa.yaml"])["datasets"]["myqa"]
    loaded_records = load_records("myqa", tmp_path, entry)
    assert len(loaded_records) == 3 and all(r["dataset"] == "myqa" for r in loaded_records)
    assert dataset_scorer("myqa", entry).name == config["datasets"]["myqa"]["scorer"]
