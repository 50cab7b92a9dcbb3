"""The ``truthserum`` command: a thin layer over the Python API.

Any :class:`~truthserum.errors.TruthserumError` becomes one line on stderr and exit status 2.

Building the parser imports nothing heavy (no numpy, torch, pydantic or yaml), so that
``truthserum --help`` and ``--version`` answer at once: the choices below are plain strings
(tests/test_cli_fast.py checks them against the enums they mirror), and each command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from truthserum import __version__
from truthserum.errors import ConfigError, SignalsError, TruthserumError

if TYPE_CHECKING:
    from truthserum.attacks import AttackOptions
    from truthserum.tasks.results import RunResults
    from truthserum.train.executors import ShardBackend

# Mirrors of enums whose modules are slow to import: config.Task, train.executors.BackendName
# and DEVICES, attacks.registry.AttackName, TUNE and RmiaOptions' defaults.
TASKS = ("membership", "attribute", "untargeted", "lm")
BACKENDS = ("local", "ray")
DEVICES = ("cpu", "cuda", "auto")
ATTACKS = (
    "lira-online", "lira-offline", "lira-online-fixed", "lira-offline-fixed", "rmia-online", "rmia-offline",
    "label-only", "global-threshold",
)
TUNE = "tune"
DEFAULT_RMIA_GAMMA = 2.0
DEFAULT_RMIA_OFFLINE_A = TUNE

# The packaged demo config of each task, by task name (also under configs/ in the repository).
DEMO_CONFIGS = {"membership": "demo.yaml", "attribute": "attribute.yaml", "untargeted": "untargeted.yaml",
                "lm": "lm.yaml"}


def demo_config_text(task: str = "membership") -> str:
    """The packaged demo config of the task named ``task``."""
    from importlib import resources

    return resources.files("truthserum").joinpath(f"configs/{DEMO_CONFIGS[task]}").read_text(encoding="utf-8")


def default_demo_dir(task: str) -> Path:
    return Path("runs/demo") if task == "membership" else Path(f"runs/demo-{task}")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", choices=list(DEVICES),
        help="where to train (default: cpu; auto picks cuda when present)",
    )
    parser.add_argument(
        "--backend", default="local", choices=list(BACKENDS),
        help="local (default): train shards one after another in this process; ray: each shard a "
             "Ray task (pip install 'truthserum[ray]'). A run resumes on either",
    )
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="with --backend ray: an existing cluster (auto, host:port or "
                             "ray://host:10001); default: start Ray on this machine")
    parser.add_argument("--cpus-per-shard", type=int, default=1, metavar="N",
                        help="with --backend ray: CPUs (torch threads) per shard task (default 1)")


def _backend(args: argparse.Namespace) -> ShardBackend:
    from truthserum.train.executors import BackendName, make_backend

    if args.backend != BackendName.RAY.value and args.cpus_per_shard != 1:
        raise ConfigError("--cpus-per-shard is for --backend ray")
    return make_backend(BackendName(args.backend), address=args.address, cpus_per_shard=args.cpus_per_shard)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="truthserum",
        description="Measure how poisoning amplifies privacy attacks (Truth Serum): membership, "
                    "attribute inference and secrets in language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run or resume an experiment from a YAML config")
    run.add_argument("config", type=Path, help="experiment config (YAML)")
    run.add_argument("--out", type=Path, required=True, help="run directory (created, or resumed)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(run)

    demo = commands.add_parser(
        "demo", help="clean versus poisoned: membership (MNIST digits), attribute or untargeted (census "
                     "table), lm (secrets in language models)"
    )
    demo.add_argument("--task", default="membership", choices=list(TASKS),
                      help="membership (default): targeted poisons on built-in MNIST; attribute: infer "
                           "marital status on the built-in CPS census table; untargeted: the adversary "
                           "holds half of that table; lm: canary secrets in byte transformers trained on "
                           "Python's bundled documentation")
    demo.add_argument("--out", type=Path, default=None,
                      help="run directory (default runs/demo, or runs/demo-<task>)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(demo)

    sweep = commands.add_parser(
        "sweep", help="attack power against the poisoning budget or the number of shadow models"
    )
    sweep.add_argument("config", type=Path, help="experiment config (YAML)")
    sweep.add_argument("--out", type=Path, required=True, help="run directory (created, resumed or re-scored)")
    swept = sweep.add_mutually_exclusive_group(required=True)
    swept.add_argument("--replicas", metavar="R,R,...",
                       help="poisons per target to train and compare, e.g. 0,1,2,4,8,16")
    swept.add_argument("--shadow-models", metavar="K,K,...",
                       help="re-score the run's signals with K shadow models each (even; 'all' for "
                            "every other model), e.g. 2,4,8,16,all; trains first only if nothing is there")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(sweep)

    attack = commands.add_parser("attack", help="attack signals computed elsewhere")
    attack.add_argument("--signals", type=Path, required=True,
                        help=".npz with logits (M,N[,A],C), labels (N,), keep (M,N), optional targets (T,); "
                             "without logits, they are read from <stem>-logits.npy beside it")
    attack.add_argument("--attack", required=True, choices=list(ATTACKS))
    attack.add_argument("--out", type=Path, help=".npz to receive scores (M,T) and members (M,T)")
    _add_attack_options(attack)
    return parser


def _add_attack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shadow-models", default=None, metavar="K",
                        help="use K shadow models per target point (K/2 IN, K/2 OUT; default and "
                             "'all': every other model, less one on a balanced design)")
    parser.add_argument("--rmia-gamma", type=float, default=DEFAULT_RMIA_GAMMA, metavar="G",
                        help=f"RMIA likelihood-ratio threshold (default {DEFAULT_RMIA_GAMMA:g})")
    parser.add_argument("--rmia-offline-a", default=str(DEFAULT_RMIA_OFFLINE_A), metavar="A",
                        help=f"RMIA offline interpolation in [0, 1], or '{TUNE}' to fit it on the "
                             f"shadow models (default {DEFAULT_RMIA_OFFLINE_A})")
    parser.add_argument("--rmia-population", type=int, default=None, metavar="Z",
                        help="RMIA population size, drawn from the non-target points (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for shadow draws and sampling (default 0)")


def _attack_options(args: argparse.Namespace) -> AttackOptions:
    from truthserum.attacks import AttackOptions
    from truthserum.attacks.options import rmia_options
    from truthserum.tasks.sweeps import parse_counts

    a = args.rmia_offline_a
    if a != TUNE:
        try:
            a = float(a)
        except ValueError:
            raise SignalsError(f"--rmia-offline-a must be a number in [0, 1] or '{TUNE}', got {a!r}") from None
    shadow_models = args.shadow_models
    if shadow_models is not None:
        shadow_models = parse_counts(shadow_models, option="--shadow-models", allow_all=True)
        if len(shadow_models) != 1:
            raise SignalsError("--shadow-models: give one number (or 'all') to attack")
        shadow_models = shadow_models[0]
    rmia = rmia_options(gamma=args.rmia_gamma, offline_a=a, population=args.rmia_population)
    options = AttackOptions(shadow_models=shadow_models, seed=args.seed, rmia=rmia)
    options.validate()
    return options


def _print_results(results: RunResults, out: Path) -> None:
    print()
    print(results.summary())
    for warning in results.warnings:
        print(f"warning: {warning}")
    roc = f"   ROC: {out / 'roc.png'}" if (out / "roc.png").exists() else ""
    if (out / "exposure.png").exists():
        roc = f"   exposure plot: {out / 'exposure.png'}"
    print(f"\nresults: {out / 'results.json'}{roc}   time: {results.timing.total_seconds:.0f} s")


def _run(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.config import load_config
    from truthserum.tasks import run_task

    config = load_config(args.config)
    _print_results(
        run_task(config, args.out, device=args.device, progress=not args.quiet, backend=backend), args.out
    )
    return 0


def _demo(args: argparse.Namespace, backend: ShardBackend) -> int:
    import yaml

    from truthserum.config import parse_config
    from truthserum.tasks import run_task

    config = parse_config(yaml.safe_load(demo_config_text(args.task)), source=f"{args.task} demo config")
    out = args.out or default_demo_dir(args.task)
    _print_results(run_task(config, out, device=args.device, progress=not args.quiet, backend=backend), out)
    return 0


def _sweep(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.config import load_config
    from truthserum.config.sections import MAX_REPLICAS
    from truthserum.report.membership import format_sweep
    from truthserum.tasks.sweeps import (
        REPLICA_FILES, SHADOW_FILES, parse_counts, run_replica_sweep, run_shadow_sweep,
    )

    config = load_config(args.config)
    if args.replicas is not None:
        budgets = parse_counts(args.replicas, option="--replicas", maximum=MAX_REPLICAS)
        summary = run_replica_sweep(config, args.out, budgets, device=args.device, progress=not args.quiet,
                                    backend=backend)
        files = REPLICA_FILES
    else:
        counts = parse_counts(args.shadow_models, option="--shadow-models", allow_all=True)
        summary = run_shadow_sweep(config, args.out, counts, device=args.device, progress=not args.quiet,
                                   backend=backend)
        files = SHADOW_FILES
    print()
    print(format_sweep(summary))
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")
    print(f"\nsweep: {args.out / files[0]}   plot: {args.out / files[1]}")
    return 0


def _attack(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.attacks import load_signals, score_attacks_with_details
    from truthserum.metrics.attack import evaluate
    from truthserum.report.text import format_attack_metrics
    from truthserum.store.rundir import read_npz, write_npz
    from truthserum.tasks.stages import bootstrap_rng

    if args.out is not None and args.out.resolve() == args.signals.resolve():
        raise SignalsError(f"--out {args.out} would overwrite the signals file; choose another path")
    if args.out is not None and args.out.exists():
        earlier = read_npz(args.out)
        if earlier is None or set(earlier) != {"scores", "members"}:
            raise SignalsError(f"--out {args.out} exists and is not an earlier scores file; choose another path")
    options = _attack_options(args)
    inputs = load_signals(args.signals)
    name = args.attack
    all_scores, details = score_attacks_with_details(inputs, [name], options)
    scores, members = all_scores[name], inputs.members
    metrics = evaluate(scores, members, rng=bootstrap_rng(options.seed, name))
    print(f"{name}: {format_attack_metrics(metrics.to_dict() | details.get(name, {}))}")
    if args.out is not None:
        try:
            write_npz(args.out, {"scores": scores, "members": members})
        except OSError as exc:
            raise SignalsError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
        print(f"scores: {args.out}")
    return 0


_COMMANDS = {"run": _run, "demo": _demo, "sweep": _sweep, "attack": _attack}


# The library's errors name its parameters; the command's name its options.
_CLI_WORDS = {
    "another out_dir": "another --out", "device 'cuda'": "--device cuda", "device must be": "--device must be",
    "cpus_per_shard": "--cpus-per-shard", "the Ray backend": "--backend ray", "address is for": "--address is for",
}


def _in_cli_words(message: str) -> str:
    for library, command in _CLI_WORDS.items():
        message = message.replace(library, command)
    return message


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    from truthserum.train.executors import LocalBackend  # the first heavy import, after parsing

    backend: ShardBackend = LocalBackend()
    try:
        if hasattr(args, "backend"):
            backend = _backend(args)
        return _COMMANDS[args.command](args, backend)
    except TruthserumError as exc:
        print(f"truthserum: error: {_in_cli_words(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only run directory, a path that is a file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"truthserum: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("truthserum: error: out of memory; use fewer or smaller models, or a smaller "
              "train.shard_size (task lm: lm.exposure.max_nodes)", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "allocate" not in str(exc) and "out of memory" not in str(exc):
            raise  # a bug: keep the traceback
        print("truthserum: error: out of memory (torch could not allocate a tensor); use fewer "
              "or smaller models, or a smaller train.shard_size (task lm: lm.exposure.max_nodes)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("truthserum: interrupted; run the same command again to resume (on either backend)",
              file=sys.stderr)
        return 130
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
