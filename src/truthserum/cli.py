"""The ``truthserum`` command: a thin layer over the Python API.

Any :class:`~truthserum.errors.TruthserumError` becomes one line on stderr and exit status 2.

Building the parser imports nothing heavy (no numpy, torch, pydantic or yaml), so that
``truthserum --help`` and ``--version`` answer at once: the choices below are plain strings
(tests/test_cli_fast.py checks them against the enums they mirror), and each command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from truthserum import __version__
from truthserum.errors import ConfigError, SignalsError, TruthserumError

if TYPE_CHECKING:
    from truthserum.attacks import AttackOptions
    from truthserum.tasks.results import RunResults
    from truthserum.train.executors import ShardBackend

# Mirrors of enums whose modules are slow to import: config.Task, train.executors.BackendName,
# DEVICES and DEFAULT_CONNECT_TIMEOUT, attacks.registry.AttackName, attacks.inputs.LogitsKind,
# TUNE and RmiaOptions' defaults.
TASKS = ("membership", "attribute", "untargeted", "lm", "defenses")
BACKENDS = ("local", "ray")
DEVICES = ("cpu", "cuda", "auto")
ATTACKS = (
    "lira-online", "lira-offline", "lira-online-fixed", "lira-offline-fixed", "rmia-online", "rmia-offline",
    "label-only", "global-threshold",
)
ALL_ATTACKS = "all"
LOGITS_KINDS = ("auto", "logits", "probabilities")  # attacks.inputs.LogitsKind
TUNE = "tune"
DEFAULT_RMIA_GAMMA = 2.0
DEFAULT_RMIA_OFFLINE_A = TUNE
DEFAULT_CONNECT_TIMEOUT = 30.0  # train.executors.DEFAULT_CONNECT_TIMEOUT

# The packaged demo config of each task, by task name (also under configs/ in the repository).
DEMO_CONFIGS = {"membership": "demo.yaml", "attribute": "attribute.yaml", "untargeted": "untargeted.yaml",
                "lm": "lm.yaml", "defenses": "defenses.yaml"}


def demo_config_text(task: str = "membership") -> str:
    """The packaged demo config of the task named ``task``."""
    from importlib import resources

    return resources.files("truthserum").joinpath(f"configs/{DEMO_CONFIGS[task]}").read_text(encoding="utf-8")


def default_demo_dir(task: str) -> Path:
    return Path("runs/demo") if task == "membership" else Path(f"runs/demo-{task}")


def _path(text: str) -> Path:
    """A path argument; an empty one is refused (``Path("")`` would quietly mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return Path(text)


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
    parser.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                        help="with --address: seconds to wait for the cluster to accept a connection "
                             f"(default {DEFAULT_CONNECT_TIMEOUT:g})")


def _backend(args: argparse.Namespace) -> ShardBackend:
    from truthserum.train.executors import BackendName, make_backend

    if args.backend != BackendName.RAY.value and args.cpus_per_shard != 1:
        raise ConfigError("--cpus-per-shard is for --backend ray")
    if args.connect_timeout is not None and args.address is None:
        raise ConfigError("--connect-timeout is for --backend ray --address")
    timeout = DEFAULT_CONNECT_TIMEOUT if args.connect_timeout is None else args.connect_timeout
    return make_backend(BackendName(args.backend), address=args.address, cpus_per_shard=args.cpus_per_shard,
                        connect_timeout=timeout)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="truthserum",
        description="Measure how poisoning amplifies privacy attacks (Truth Serum): membership, "
                    "attribute inference and secrets in language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run or resume an experiment from a YAML config")
    run.add_argument("config", type=_path, help="experiment config (YAML)")
    run.add_argument("--out", type=_path, required=True, help="run directory (created, or resumed)")
    run.add_argument("--report-to", type=_path, default=None, metavar="DIR",
                     help="re-report a finished run without writing into --out (which may be read-only): "
                          "results.json, plots, signals and scores go to DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(run)

    demo = commands.add_parser(
        "demo", help="clean versus poisoned: membership (MNIST digits), attribute or untargeted (census "
                     "table), lm (secrets in language models), defenses (the defense matrix on MNIST digits)"
    )
    demo.add_argument("--task", default="membership", choices=list(TASKS),
                      help="membership (default): targeted poisons on built-in MNIST; attribute: infer "
                           "marital status on the built-in CPS census table; untargeted: the adversary "
                           "holds half of that table; lm: canary secrets in byte transformers trained on "
                           "Python's bundled documentation; defenses: every defense against every poison "
                           "strategy on built-in MNIST")
    demo.add_argument("--out", type=_path, default=None,
                      help="run directory (default runs/demo, or runs/demo-<task>)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(demo)

    sweep = commands.add_parser(
        "sweep", help="attack power against the poisoning budget or the number of shadow models (membership), "
                      "or exposure against a canary's insertions (lm)"
    )
    sweep.add_argument("config", type=_path, help="experiment config (YAML)")
    sweep.add_argument("--out", type=_path, required=True,
                       help="run directory (created, resumed or re-scored); --insertions: the folder of its runs")
    swept = sweep.add_mutually_exclusive_group(required=True)
    swept.add_argument("--replicas", metavar="R,R,...",
                       help="poisons per target to train and compare, e.g. 0,1,2,4,8,16")
    swept.add_argument("--shadow-models", metavar="K,K,...",
                       help="re-score the run's signals with K shadow models each (even; 'all' for "
                            "every other model), e.g. 2,4,8,16,all; trains first only if nothing is there")
    swept.add_argument("--insertions", metavar="N,N,...",
                       help="lm: one run per count of a canary's insertions, each under --out, e.g. 1,2,4,8")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(sweep)

    plan = commands.add_parser(
        "plan", help="write what a membership experiment would train (design, poisons, each model's training "
                     "set), without training: train elsewhere, then attack --plan"
    )
    plan.add_argument("config", type=_path, help="experiment config (YAML), task membership")
    plan.add_argument("--out", type=_path, required=True,
                      help="plan directory (created; an earlier plan of the same config is rewritten)")

    audit_plan = commands.add_parser(
        "audit-plan", help="the largest epsilon each lower bound can show at a perfect attack, for a "
                           "number of trials: what an audit of that size can prove at best"
    )
    audit_plan.add_argument("--trials", default="100,1000,10000", metavar="N,N,...",
                            help="(model, target) pairs for the many-run bounds, canaries for the one-run "
                                 "bounds (default 100,1000,10000; at most 100000)")
    audit_plan.add_argument("--delta", type=float, default=1e-5, help="the audited delta (default 1e-5)")
    audit_plan.add_argument("--confidence", type=float, default=0.95, help="of every bound (default 0.95)")

    report = commands.add_parser(
        "report", help="rebuild report.html of a finished run, sweep or attack output from its files")
    report.add_argument("run_dir", type=_path, metavar="DIR", help="the run directory")
    report.add_argument("--out", type=_path, metavar="FILE",
                        help="where to write the report (default DIR/report.html; a folder receives report.html)")
    report.add_argument("--no-thumbnails", action="store_true",
                        help="leave out the pictures of training records (a page to share beyond the data's owners)")

    attack = commands.add_parser("attack", help="attack signals, or a plan's logits, computed elsewhere")
    source = attack.add_mutually_exclusive_group(required=True)
    source.add_argument("--signals", type=_path,
                        help=".npz with logits (M,N[,A],C), labels (N,), keep (M,N), optional targets (T,); "
                             "without logits, they are read from <stem>-logits.npy beside it")
    source.add_argument("--plan", type=_path, metavar="DIR",
                        help="a directory written by 'truthserum plan'; its models' logits in --logits")
    attack.add_argument("--logits", type=_path, metavar="FILE",
                        help="with --plan: .npz holding one array per condition (clean, poisoned), each (M,N,C) "
                             "or (M,N,A,C): model m on pool point n (layout in the plan's plan.json)")
    attack.add_argument("--attack", action="append", choices=[*ATTACKS, ALL_ATTACKS], metavar="NAME",
                        help=f"an attack ({', '.join(ATTACKS)}); repeat for several; '{ALL_ATTACKS}' (default): "
                             "every one (with --plan: the config's attacks)")
    attack.add_argument("--out", type=_path,
                        help="directory receiving results.json, roc.png and the scores (default: <signals "
                             "stem>-attack/ beside the signals file; with --plan, the plan directory). A name "
                             "ending in .npz keeps the earlier form: one attack's scores and members only")
    attack.add_argument("--logits-kind", default="auto", choices=list(LOGITS_KINDS),
                        help="auto (default): rows that lie in [0, 1] and sum to 1 are taken as probabilities "
                             "(with a warning) and their logarithm attacked; logits or probabilities: say which")
    attack.add_argument("--skip-unsupported", action="store_true",
                        help="drop the target points that lack the IN or OUT shadow models an attack needs "
                             "(default: refuse them), and say how many")
    _add_attack_options(attack)
    return parser


def _add_attack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shadow-models", default=None, metavar="K",
                        help="use K shadow models per target point (K/2 IN, K/2 OUT; default and "
                             "'all': every other model, less one on a balanced design)")
    parser.add_argument("--rmia-gamma", type=float, default=None, metavar="G",
                        help=f"RMIA likelihood-ratio threshold (default {DEFAULT_RMIA_GAMMA:g}; with --plan, "
                             "the config's)")
    parser.add_argument("--rmia-offline-a", default=None, metavar="A",
                        help=f"RMIA offline interpolation in [0, 1], or '{TUNE}' to fit it on the "
                             f"shadow models (default {DEFAULT_RMIA_OFFLINE_A}; with --plan, the config's)")
    parser.add_argument("--rmia-population", type=int, default=None, metavar="Z",
                        help="RMIA population size, drawn from the non-target points (default: all; with "
                             "--plan, the config's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for shadow draws, sampling and the bootstrap (default 0; with --plan, "
                             "the config's)")


def _attack_options(args: argparse.Namespace, base: AttackOptions | None = None) -> AttackOptions:
    """The options given on the command line, the others from ``base`` (default: the defaults)."""
    from truthserum.attacks import AttackOptions
    from truthserum.attacks.options import rmia_options
    from truthserum.tasks.sweeps import parse_counts

    base = base or AttackOptions()
    rmia = base.rmia.model_dump()
    a = args.rmia_offline_a
    if a is not None and a != TUNE:
        try:
            a = float(a)
        except ValueError:
            raise SignalsError(f"--rmia-offline-a must be a number in [0, 1] or '{TUNE}', got {a!r}") from None
    given = {"gamma": args.rmia_gamma, "offline_a": a, "population": args.rmia_population}
    rmia.update({key: value for key, value in given.items() if value is not None})
    shadow_models = args.shadow_models
    if shadow_models is not None:
        shadow_models = parse_counts(shadow_models, option="--shadow-models", allow_all=True)
        if len(shadow_models) != 1:
            raise SignalsError("--shadow-models: give one number (or 'all') to attack")
        shadow_models = shadow_models[0]
    else:
        shadow_models = base.shadow_models
    options = AttackOptions(shadow_models=shadow_models, seed=base.seed if args.seed is None else args.seed,
                            rmia=rmia_options(**rmia))
    options.validate()
    return options


def _print_results(results: RunResults, out: Path) -> None:
    print()
    print(results.summary())
    for warning in results.warnings:
        print(f"warning: {_in_cli_words(warning)}")
    roc = f"   ROC: {out / 'roc.png'}" if (out / "roc.png").exists() else ""
    if (out / "exposure.png").exists():
        roc = f"   exposure plot: {out / 'exposure.png'}"
    report = f"   report: {out / 'report.html'}" if (out / "report.html").exists() else ""
    print(f"\nresults: {out / 'results.json'}{roc}{report}   time: {results.timing.total_seconds:.0f} s")


def _run(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.config import load_config
    from truthserum.tasks import run_task

    config = load_config(args.config)
    results = run_task(config, args.out, device=args.device, progress=not args.quiet, backend=backend,
                       report_to=args.report_to)
    _print_results(results, args.out if args.report_to is None else args.report_to)
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
    if args.insertions is not None:
        return _insertion_sweep(args, config, backend)
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


def _insertion_sweep(args: argparse.Namespace, config, backend: ShardBackend) -> int:
    from truthserum.report.lm import format_insertion_sweep
    from truthserum.tasks.lm_sweep import INSERTION_FILES, MAX_INSERTIONS, run_insertion_sweep
    from truthserum.tasks.sweeps import parse_counts

    counts = parse_counts(args.insertions, option="--insertions", maximum=MAX_INSERTIONS, example="1,2,4,8")
    summary = run_insertion_sweep(config, args.out, counts, device=args.device, progress=not args.quiet,
                                  backend=backend)
    print()
    print(format_insertion_sweep(summary))
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    print(f"\nsweep: {args.out / INSERTION_FILES[0]}   plot: {args.out / INSERTION_FILES[1]}   "
          f"runs: {args.out}/insertions-<n>/")
    return 0


def _plan(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.config import load_config
    from truthserum.tasks.plan import write_plan

    plan = write_plan(config=load_config(args.config), out_dir=args.out)
    print()
    print(plan.summary())
    return 0


def _attack(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.tasks.stages import log_to_stderr

    common = {"skip_unsupported": args.skip_unsupported, "logits_kind": args.logits_kind,
              "log": lambda message: log_to_stderr(_in_cli_words(message))}
    if args.plan is not None:
        from truthserum.tasks.plan import read_plan
        from truthserum.tasks.plan_attack import attack_plan

        if args.logits is None:
            raise SignalsError("--plan needs --logits FILE.npz: the logits of the plan's models (see its plan.json)")
        if args.out is not None and args.out.suffix == ".npz":
            raise SignalsError(f"--out {args.out}: with --plan, --out names a directory (results.json, roc.png, "
                               "scores-<condition>.npz)")
        plan = read_plan(args.plan)
        options = _attack_options(args, plan.config.attack_options())
        results = attack_plan(plan_dir=args.plan, logits=args.logits, attacks=args.attack, options=options,
                              out_dir=args.out, **common)
        _print_results(results, args.out or args.plan)
        return 0

    from truthserum.report.text import format_attack_metrics
    from truthserum.tasks.signals import attack_signals, default_out_dir, write_attack_scores

    if args.logits is not None:
        raise SignalsError("--logits is for --plan; a signals file holds its logits (or <stem>-logits.npy beside it)")
    options = _attack_options(args)
    if args.out is not None and args.out.suffix == ".npz":  # the earlier form: one attack's scores
        attacks = list(dict.fromkeys(args.attack or []))
        if len(attacks) != 1 or attacks[0] == ALL_ATTACKS:
            raise SignalsError(f"--out {args.out}: a .npz receives one attack's scores; name one --attack, or "
                               "give --out a directory for results.json, roc.png and every attack's scores")
        results = write_attack_scores(signals=args.signals, attack=attacks[0], scores_file=args.out,
                                      options=options, **common)
        out = None
    else:
        out = args.out or default_out_dir(args.signals)
        results = attack_signals(signals=args.signals, attacks=args.attack, options=options, out_dir=out, **common)
    condition = next(iter(results.conditions.values()))
    for name, result in (condition.attacks or {}).items():
        print(f"{name}: {format_attack_metrics(result.to_json())}")
    split = condition.measurements["accuracy"]
    print("accuracy: " + "  ".join(f"{key} {'-' if value is None else f'{100 * value:.1f}%'}"
                                   for key, value in split.items()))
    for warning in results.warnings:
        print(f"warning: {_in_cli_words(warning)}")
    if out is None:
        print(f"scores: {args.out}")
    else:
        print(f"\nresults: {out / 'results.json'}   ROC: {out / 'roc.png'}   scores: {out / 'scores.npz'}")
    return 0


MAX_PLANNED_TRIALS = 100_000  # the f-DP test steps once per right guess


def _audit_plan(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.metrics.bounds import ceiling_table

    try:
        trials = [int(part) for part in args.trials.split(",")]
    except ValueError:
        raise ConfigError(f"--trials must be whole numbers separated by commas, got {args.trials!r}") from None
    if any(not 2 <= count <= MAX_PLANNED_TRIALS for count in trials):
        raise ConfigError(f"--trials must each be between 2 and {MAX_PLANNED_TRIALS:,}, got {args.trials}")
    if not 0.0 < args.delta < 1.0:
        raise ConfigError(f"--delta must be in (0, 1), got {args.delta:g}")
    if not 0.5 <= args.confidence < 1.0:
        raise ConfigError(f"--confidence must be in [0.5, 1), got {args.confidence:g}")
    print(ceiling_table(trials, delta=args.delta, confidence=args.confidence))
    return 0


def _report(args: argparse.Namespace, backend: ShardBackend) -> int:
    from truthserum.report.html import report_run

    path, seconds = report_run(run_dir=args.run_dir, out_file=args.out, thumbnails=not args.no_thumbnails)
    print(f"report: {path} ({path.stat().st_size / 1024:,.0f} KB, {seconds:.1f} s)")
    return 0


_COMMANDS = {"run": _run, "demo": _demo, "sweep": _sweep, "plan": _plan, "attack": _attack,
             "audit-plan": _audit_plan, "report": _report}


# The library's errors name its parameters; the command's name its options.
_CLI_WORDS = {
    "another out_dir": "another --out", "device 'cuda'": "--device cuda", "device must be": "--device must be",
    "cpus_per_shard": "--cpus-per-shard", "connect_timeout": "--connect-timeout", "the Ray backend": "--backend ray",
    "address is for": "--address is for",
    "pass skip_unsupported=True": "use --skip-unsupported", "skip_unsupported:": "--skip-unsupported:",
    "logits_kind must be": "--logits-kind must be", "logits_kind is probabilities": "--logits-kind is probabilities",
    "set logits_kind logits": "use --logits-kind logits", "out_dir names": "--out names", "report_to": "--report-to",
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
        hint = ("; free some space, then run the same command again: what is finished is kept"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        print(f"truthserum: error: {where}{exc.strerror or exc}{hint}", file=sys.stderr)
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
