"""The model subcommands: prepare-model, download-model, latency-profile and twins."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specrepro.cli.common import Subcommand, config_arg


def prepare_model_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-model", help="resolve a model (convert a GGUF file once) into the cache"
    )
    config_arg(p)
    p.add_argument("--model", required=True)


def download_model_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-model",
        help="bring a hub model into the local hub cache (HF_* variables apply; offline with "
        "HF_HUB_OFFLINE=1 when cached) and write a JSON marker naming its commit",
    )
    p.add_argument("--model", required=True, help="hub id, e.g. lmsys/vicuna-7b-v1.3")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--out", required=True, help="marker JSON: model, revision, commit, path")


def latency_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency-profile",
        help="per-token latency of one draft forward against depth at equal size (random weights)",
    )
    config_arg(p)
    p.add_argument("--scale", choices=["default", "paper"], required=True)
    p.add_argument("--target", help="the model whose layer shape a built family keeps")
    p.add_argument(
        "--family",
        nargs="*",
        default=[],
        metavar="NAME:DEPTH[:HIDDEN]",
        help="built family members: equal-size shapes solved from the target's (at HIDDEN, "
        "the wide family's own model width, when given)",
    )
    p.add_argument("--budget-layers", type=int, default=2, help="family size, in target layers")
    p.add_argument(
        "--drafts", nargs="*", default=[], help="registry drafts profiled at their own shape"
    )
    p.add_argument("--tokens", type=int, default=16, help="timed one-token forwards per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--device", default=None, help="torch device (default: runs.device or cpu)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: float32 on CPU, float16 on GPU",
    )
    p.add_argument("--out", required=True, help="JSON rows")


def twins_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "twins",
        help="write toy-scale twins of a config's hub models into a local hub cache, and a "
        "config overlay that runs the config on them on a CPU (a smoke test before GPU hours)",
    )
    p.add_argument(
        "--configfile",
        nargs="+",
        required=True,
        metavar="YAML",
        help="the paper config (several merge in order, as Snakemake's --configfile)",
    )
    p.add_argument("--out", required=True, help="folder: OUT/hub, OUT/overlay.yaml, OUT/twins.json")
    p.add_argument(
        "--mirror",
        help="benchmark data folder (mtbench/, squad/, spider/): the tokenizers learn from its "
        "prompts and the overlay reads the data from it (default for the tokenizers: the "
        "config's data.mirror, else its data.dir)",
    )
    p.add_argument("--corpus", nargs="*", default=[], help="more text files the tokenizers learn")
    p.add_argument("--questions", type=int, default=2, help="questions per dataset in the run")
    p.add_argument("--tokens", type=int, default=8, help="new tokens per answer in the run")
    p.add_argument("--run", help="the run's name (default: the first config's stem + '-twin')")


def cmd_twins(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from specrepro.config import ConfigError, merge_into, validate_config
    from specrepro.models.twins import build_twins, corpus_texts, merged, shape_line

    # Read without validating: a user's registry may describe unknown ids with `twin:`.
    config: dict = {}
    for path in map(Path, args.configfile):
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        merge_into(config, yaml.safe_load(path.read_text()) or {})
    mirror = Path(args.mirror) if args.mirror else None
    if mirror is not None and not mirror.is_dir():
        raise ConfigError(f"twins: --mirror {mirror} is not a folder")
    data = config.get("data", {})
    source = mirror or next(
        (Path(d) for d in (data.get("mirror"), data.get("dir")) if d and Path(d).is_dir()), None
    )
    texts = corpus_texts(source, [Path(f) for f in args.corpus])
    if source is None and not args.corpus:
        print(
            "twins: no benchmark data: the tokenizers learn the prompt formats only",
            file=sys.stderr,
        )
    out = Path(args.out)
    run = args.run or f"{Path(args.configfile[0]).stem}-twin"
    report = build_twins(config, out, run, texts, args.questions, args.tokens, mirror)
    for model in report.models:
        estimate = " (estimated real shape)" if model.estimate else ""
        print(
            f"{model.model_id}@{model.commit[:12]} [{', '.join(model.names)}] {model.kind}: "
            f"{shape_line(model.real)} {model.real_parameters / 1e6:,.0f}M -> "
            f"{shape_line(model.twin)} {model.twin_parameters / 1e6:.2f}M, "
            f"{model.bytes / 1e6:.1f} MB{estimate}"
        )
    sizes = ", ".join(f"{family} {n}" for family, n in report.tokenizers.items())
    print(f"tokenizers ({sizes} tokens) from {report.corpus_chars:,} characters of text")
    print(f"hub cache: {report.hub_cache}")
    print(f"overlay: {out / 'overlay.yaml'}")
    try:
        with open(out / "overlay.yaml") as f:
            validate_config(merged(config, yaml.safe_load(f)), source="config with the overlay")
    except ConfigError as err:
        print(f"twins: warning: {err}", file=sys.stderr)
    configs = " ".join(args.configfile)
    print(f"run it: HF_HUB_OFFLINE=1 snakemake --configfile {configs} {out / 'overlay.yaml'}")
    print(f"built in {report.seconds:.1f} s")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from specrepro.config import ConfigError, load_config, model_spec
    from specrepro.models.loader import resolve

    config = load_config(args.config, args.set_json)
    if args.model not in config["models"]["registry"]:
        raise ConfigError(f"unknown model {args.model!r}")
    print(resolve(model_spec(config, args.model), Path(config["models"]["cache_dir"])))
    return 0


def cmd_download_model(args: argparse.Namespace) -> int:
    from specrepro.models.hub import download_model

    marker = download_model(args.model, args.revision)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(marker, indent=2) + "\n")
    print(f"{marker['model']}@{marker['commit']} -> {marker['path']}")
    return 0


def cmd_latency_profile(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoConfig, LlamaConfig

    from specrepro.config import ConfigError, load_config, model_spec
    from specrepro.models.loader import check_available, resolve
    from specrepro.training.family import Shape, equal_size_family, paper_shapes
    from specrepro.training.latency import LatencySettings, profile_shapes

    config = load_config(args.config, args.set_json)
    cache = Path(config["models"]["cache_dir"])

    def model_config(name: str) -> object:
        spec = model_spec(config, name)
        check_available(spec)
        return AutoConfig.from_pretrained(resolve(spec, cache))

    device = args.device or config["runs"].get("device", "cpu")
    dtype = args.dtype or ("float32" if device == "cpu" else "float16")
    shapes: dict[str, tuple[Shape, object]] = {}
    if args.scale == "paper":
        llama = LlamaConfig(max_position_embeddings=4096)
        shapes = {name: (shape, llama) for name, shape in paper_shapes().items()}
    elif args.family:
        if not args.target:
            raise ConfigError("latency-profile --family needs --target (the family's model)")
        target = model_config(args.target)
        for item in args.family:
            name, depth, *hidden = item.split(":")
            width = int(hidden[0]) if hidden else None
            (shape,) = equal_size_family(Shape.of(target), [int(depth)], args.budget_layers, width)
            shapes[name] = (shape, target)
    for name in args.drafts:
        draft = model_config(name)
        shapes[name] = (Shape.of(draft), draft)
    if not shapes:
        raise ConfigError(
            "latency-profile: nothing to profile (give --family, --drafts or --scale paper)"
        )
    settings = LatencySettings(args.prompt_tokens, args.warmup, args.tokens, args.repeats)
    rows = profile_shapes(shapes, settings, getattr(torch, dtype), device)
    for row in rows:
        row["scale"] = args.scale
        size = row["counted_parameters"] / 1e6
        print(f"{row['name']:<28} {size:8.1f}M {row['ms_per_token']:8.2f} ms/token")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "prepare-model": Subcommand(prepare_model_parser, cmd_prepare_model),
    "download-model": Subcommand(download_model_parser, cmd_download_model),
    "latency-profile": Subcommand(latency_profile_parser, cmd_latency_profile),
    "twins": Subcommand(twins_parser, cmd_twins),
}
