"""``poisonlab`` command line: build a dataset container, train one run, launch a sweep, sync MLflow.

The Snakemake DAG calls the same library functions; this is for one-off runs
and for the main job before (or outside) the DAG. Every command reads the
config as the DAG does (``--scale``'s file merged over ``--config``), so its
files land where the DAG's would: ``paths``, the run's recipe, defense options
and kept weights all as the train rule has them.
"""

from __future__ import annotations

import argparse
import json
import sys

from poisonlab.config import get_dataset_options, load_scaled
from poisonlab.data import DATASETS
from poisonlab.defenses import DEFENSES
from poisonlab.models import MODELS
from poisonlab.paths import Paths
from poisonlab.poisons import POISONS
from poisonlab.registry import ConfigError, Registry


def registered(registry: Registry):
    """An argparse ``type`` that accepts the registry's names (numbered ones too, ``jpeg-10``) and rejects
    any other with the registry's own message, which lists them."""
    def check(name: str) -> str:
        try:
            registry.resolve(name)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return name

    check.__name__ = registry.kind  # argparse names the type in its messages
    return check


def one_of(registry: Registry, text: str = "") -> str:
    return f"{text}{'; ' if text else ''}one of {', '.join(registry.choices())}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poisonlab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="config file (default: %(default)s)")
    parser.add_argument("--scale", help="merge config/scales/SCALE.yaml over the config (default: its `scale`)")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="build the clean container, {paths.data}/clean/{dataset}.npz")
    data.add_argument("--dataset", type=registered(DATASETS), help=one_of(DATASETS, "default: the config's dataset"))
    data.add_argument("--out", help="default: {paths.data}/clean/{dataset}.npz")

    train = commands.add_parser("train", help="train one run and write its metrics.json, as the train rule does")
    train.add_argument("--dataset", type=registered(DATASETS), help=one_of(DATASETS, "default: the config's dataset"))
    train.add_argument("--poison", type=registered(POISONS), default="clean", help=one_of(POISONS))
    train.add_argument("--defense", type=registered(DEFENSES), default="none", help=one_of(DEFENSES))
    train.add_argument("--arch", type=registered(MODELS), help=one_of(MODELS, "default: the config's first arch"))
    train.add_argument("--recipe", help="default: the config's recipe")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data", help="training container (default: the train rule's: the clean, poisoned or "
                                      "sanitized container under paths.data)")
    train.add_argument("--run-dir", help="default: {paths.results}/runs/{dataset}/{poison}/{defense}/{arch}/"
                                         "{recipe}/seed{seed}")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's device)")
    train.add_argument("--no-progress", action="store_true")

    launch = commands.add_parser("launch", help="submit train runs (archs x seeds) to Slurm, local or debug "
                                                "executors through submitit")
    # SUPPRESS: when absent here, the --config (--scale) given before `launch` (or its default) stands.
    launch.add_argument("--config", default=argparse.SUPPRESS, help="config file (default: config/config.yaml)")
    launch.add_argument("--scale", default=argparse.SUPPRESS, help="merge config/scales/SCALE.yaml over the config")
    launch.add_argument("--executor", default="slurm", help="slurm, local or debug (default: %(default)s)")
    launch.add_argument("--arch", type=registered(MODELS), action="append",
                        help=one_of(MODELS, "repeatable (default: the config's archs)"))
    launch.add_argument("--seed", type=int, action="append", help="repeatable (default: the config's seeds)")
    launch.add_argument("--dataset", type=registered(DATASETS), help=one_of(DATASETS, "default: the config's dataset"))
    launch.add_argument("--recipe", help="default: the config's recipe")
    launch.add_argument("--partition", help="Slurm partition")
    launch.add_argument("--account", help="Slurm account")
    launch.add_argument("--wait", action="store_true", help="wait and print each run's final_test_acc")

    commands.add_parser("sync", help="replay the runs' MLflow journals into the store (the DAG does it itself; "
                                     "for runs launched without --wait)")

    args = parser.parse_args(argv)
    try:
        config = load_scaled(args.config, args.scale)
        if args.command == "data":
            return _data(config, args)
        if args.command == "launch":
            from poisonlab.launch import launch_command

            return launch_command(config, args)
        if args.command == "sync":
            from poisonlab import tracking

            print(f"{tracking.sync()} journal line(s) replayed into {tracking.tracking_uri()}")
            return 0
        return _train(config, args)
    except ConfigError as error:
        print(f"poisonlab: {error}", file=sys.stderr)
        return 2


def _data(config: dict, args: argparse.Namespace) -> int:
    from poisonlab.data import build_dataset

    name = args.dataset or config["dataset"]
    options, subset = get_dataset_options(config, name)
    out = args.out or Paths.from_config(config).clean(name)
    dataset = build_dataset(name, options=options, subset=subset)
    dataset.save(out)
    print(f"{out}: {len(dataset.x_train)} train / {len(dataset.x_test)} test, {dataset.image_shape}, "
          f"{dataset.num_classes} classes")
    return 0


def _train(config: dict, args: argparse.Namespace) -> int:
    from poisonlab import tracking
    from poisonlab.launch import train_arguments
    from poisonlab.training.run import RunSpec, train_run

    spec = RunSpec(dataset=args.dataset or config["dataset"], arch=args.arch or config["archs"][0],
                   recipe=args.recipe or config["recipe"], seed=args.seed, poison=args.poison, defense=args.defense)
    arguments = train_arguments(config, spec, data_path=args.data, run_dir=args.run_dir)
    record = train_run(**arguments, device=args.device or config.get("device", "auto"),
                       progress=not args.no_progress)
    tracking.sync()
    summary = {k: record[k] for k in ("final_test_acc", "peak_test_acc", "peak_epoch", "wall_seconds")}
    print(json.dumps({"run": spec.name, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
