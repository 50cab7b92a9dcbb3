"""The bad-input corpus of tests/test_bad_inputs.py, as data.

Each :class:`Case` names one mistake a user can make on the command line: its id, a builder
that writes the case's inputs (YAML configs, tiny .npz and .csv files, signals files, plan
directories) into the case's own directory and returns the argv for ``truthserum.cli.main``,
and the fragment (case-insensitive) the one error line must contain.

The rule every case checks (docs/usage.md): bad input gets exactly one line on stderr,
``truthserum: error: ...`` naming the problem, exit status 2, no traceback, no Python warning,
no hang, and nothing already on disk changed. Every case must fail before anything is trained.

A builder gets a :class:`Ctx`: ``ctx.root`` is the case's directory (everything written there
is the case's input, checked byte for byte after the command), ``ctx.guard`` a finished tiny run
directory shared by every case (checked by sha256 after each one).
"""

from __future__ import annotations

import copy
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from conftest import TINY_CONFIG

MARKER = "UNPICKLED"  # a file that appears only if something in a case was unpickled
FAST = ("--rmia-offline-a", "0.5")  # no RMIA tuning where an attack would run at all


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    fragment: str
    max_line: int = 1000  # the error line must stay readable
    fifo: bool = False  # run in a child process with a timeout (a named pipe may block a reader)


@dataclass
class Ctx:
    root: Path
    guard: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def out(self) -> str:
        """A fresh output directory (not there yet)."""
        return str(self.root / "out")

    def text(self, name: str, text: str) -> str:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    def data(self, name: str, data: bytes) -> str:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    def config(self, raw: Any, name: str = "config.yaml") -> str:
        return self.text(name, yaml.safe_dump(raw, sort_keys=False))

    def npz(self, name: str, **arrays: Any) -> str:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, **arrays)
        return str(path)

    def fifo(self, name: str) -> str:
        path = self.path(name)
        os.mkfifo(path)
        return str(path)

    @property
    def marker(self) -> Path:
        return self.root / MARKER


# --------------------------------------------------------------------------------------------
# Building blocks

DELETE = object()


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, section by section (DELETE removes a key)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny(**overrides: Any) -> dict:
    return merged(TINY_CONFIG, overrides)


class _Trap:
    """Unpickling this touches ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def pickle_bytes(ctx: Ctx) -> bytes:
    return pickle.dumps({"x": _Trap(ctx.marker), "y": [0, 1]}, protocol=4)


def object_array(ctx: Ctx) -> np.ndarray:
    array = np.empty(2, dtype=object)
    array[0], array[1] = _Trap(ctx.marker), _Trap(ctx.marker)
    return array


def npy_bytes(shape: tuple, descr: str = "<f4", data: bytes = b"", pad: int = 0) -> bytes:
    """A version-2 .npy: a header claiming ``shape`` (padded by ``pad`` spaces), then ``data``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}) + " " * pad
    header += " " * (-(len(header) + 12 + 1) % 64) + "\n"
    return b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode("latin1") + data


def npz_of_members(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def pool_arrays(n: int = 40, d: int = 4, classes: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, d)).astype(np.float32), "y": np.arange(n) % classes}


def signals_arrays(num_models: int = 8, num_points: int = 40, classes: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    keep = rng.random((num_models, num_points)).argsort(axis=0) < num_models // 2
    labels = rng.integers(0, classes, num_points)
    logits = rng.normal(size=(num_models, num_points, classes)).astype(np.float32)
    return {"logits": logits, "labels": labels, "keep": keep, "targets": np.arange(12)}


CASES: list[Case] = []


def case(id: str, fragment: str, *, max_line: int = 1000, fifo: bool = False):
    """Register the decorated builder as a case."""
    def register(build: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
        CASES.append(Case(id=id, build=build, fragment=fragment, max_line=max_line, fifo=fifo))
        return build
    return register


def run_config(id: str, raw: Any, fragment: str, *, max_line: int = 1000) -> None:
    """``truthserum run CONFIG --out <fresh>`` with ``raw`` dumped as the config."""
    case(id, fragment, max_line=max_line)(lambda ctx: ["run", ctx.config(raw), "--out", ctx.out])


def run_text(id: str, text: str | bytes, fragment: str, *, max_line: int = 1000) -> None:
    """``truthserum run CONFIG --out <fresh>`` with ``text`` as the config file, verbatim."""
    def build(ctx: Ctx) -> list[str]:
        path = ctx.data("config.yaml", text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["run", path, "--out", ctx.out]
    case(id, fragment, max_line=max_line)(build)


# --------------------------------------------------------------------------------------------
# Config files: missing, unreadable, not YAML, not a mapping, empty, too deep, keys twice

case("config-missing", "no such config file")(lambda ctx: ["run", str(ctx.path("nope.yaml")), "--out", ctx.out])


@case("config-is-directory", "is a directory")
def _(ctx):
    ctx.path("cfg.yaml").mkdir()
    return ["run", str(ctx.path("cfg.yaml")), "--out", ctx.out]


run_text("config-not-yaml", "data: [unclosed\nseed: 3\n", "not valid yaml")
run_text("config-tab-indent", "data:\n\tsource: digits\n", "not valid yaml")
run_text("config-not-utf8", b"seed: 3\n\xff\xfe\xfa bad bytes\n", "cannot read config")
run_text("config-empty", "", "the config is empty")
run_text("config-only-comment", "# nothing here\n", "the config is empty")
run_text("config-empty-mapping", "{}\n", "the config is empty")
run_text("config-top-level-list", "- seed\n- 3\n", "the top level must be a mapping")
run_text("config-top-level-scalar", "42\n", "the top level must be a mapping")
run_text("config-python-tag", "seed: !!python/object/apply:os.system ['touch UNPICKLED']\n", "not valid yaml")
run_config("config-unknown-top-key", tiny(sed=3), "sed: unknown key")
run_config("config-unknown-nested-key", tiny(design={"num_model": 4}), "design.num_model: unknown key")
run_config("config-huge-unknown-key", tiny(**{"k" * 200_000: 1}), "unknown key", max_line=500)
run_text("config-duplicate-top-key", "seed: 1\nseed: 2\n", "'seed' is given twice")
run_text("config-duplicate-nested-key", "design:\n  num_models: 4\n  num_models: 6\n", "'num_models' is given twice")
run_text("config-duplicate-huge-key", f"? {'k' * 200_000}\n: 1\n? {'k' * 200_000}\n: 2\n", "given twice", max_line=500)
run_text("config-nested-lists-1000", "seed: " + "[" * 1000 + "]" * 1000 + "\n", "nested")
run_text("config-nested-lists-20000", "seed: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested")
run_text("config-nested-maps-1000", "seed: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", "nested")
run_text("config-nested-25-levels", "".join("  " * i + f"k{i}:\n" for i in range(25)) + "  " * 25 + "v: 1\n",
         "nested more than 20 levels")

# --------------------------------------------------------------------------------------------
# Config values: wrong types, bounds, enums

run_config("task-unknown", tiny(task="membershipp"), "task: must be one of")
run_config("task-a-list", tiny(task=["membership"]), "task: must be one of")
run_config("seed-negative", tiny(seed=-1), "seed: input should be greater than or equal to 0")
run_config("seed-2-70", tiny(seed=2**70), "seed: Input should be less than or equal to 9223372036854775807")
run_config("seed-string", tiny(seed="three"), "seed: input should be a valid integer")
run_config("seed-float", tiny(seed=1.5), "seed: input should be a valid integer")
run_config("seed-bool", tiny(seed=True), "seed: input should be a valid integer")
run_config("num-models-odd", tiny(design={"num_models": 5}), "design.num_models: must be even")
run_config("num-models-zero", tiny(design={"num_models": 0}),
           "design.num_models: input should be greater than or equal to 4")
run_config("num-models-negative", tiny(design={"num_models": -4}), "design.num_models")
run_config("num-models-1e12", tiny(design={"num_models": 10**12}),
           "design.num_models: input should be less than or equal to 4096")
run_config("num-models-string", tiny(design={"num_models": "16"}), "design.num_models: input should be a valid integer")
run_config("num-targets-zero", tiny(design={"num_targets": 0}), "design.num_targets")
run_config("num-targets-over-pool", tiny(design={"num_targets": 301}), "design.num_targets = 301")
run_config("pool-size-3", tiny(data={"pool_size": 3}), "data.pool_size")
run_config("pool-size-over-data", tiny(data={"pool_size": 5000}), "pool_size")
run_config("pool-size-4-models-4", tiny(data={"pool_size": 4}, design={"num_models": 4, "num_targets": 2}),
           "found before training (4 models, 4 points, 2 targets)")
run_config("batch-size-1e12", tiny(train={"batch_size": 10**12}),
           "train.batch_size: input should be less than or equal to 1000000")
run_config("batch-size-1e18", tiny(train={"batch_size": 10**18}), "train.batch_size")
run_config("batch-size-zero", tiny(train={"batch_size": 0}), "train.batch_size")
run_config("shard-size-1e18", tiny(train={"shard_size": 10**18}),
           "train.shard_size: input should be less than or equal to 4096")
run_config("epochs-zero", tiny(train={"epochs": 0}), "train.epochs")
run_config("epochs-1e9", tiny(train={"epochs": 10**9}), "train.epochs")
run_config("learning-rate-nan", tiny(train={"learning_rate": float("nan")}), "train.learning_rate")
run_config("learning-rate-bool", tiny(train={"learning_rate": True}), "train.learning_rate: must be a number, not true")
run_config("learning-rate-negative", tiny(train={"learning_rate": -0.1}), "train.learning_rate")
run_config("momentum-one", tiny(train={"momentum": 1.0}), "train.momentum")
run_config("optimizer-unknown", tiny(train={"optimizer": "adamw"}), "train.optimizer")
run_config("schedule-unknown", tiny(train={"schedule": "linear"}), "train.schedule")
run_config("mixed-precision-string", tiny(train={"mixed_precision": "yes"}), "train.mixed_precision")
run_config("augment-on-table", tiny(data={"source": "breast-cancer", "pool_size": 300}, train={"augment": "crop"}),
           "train.augment 'crop' needs images")
run_config("augment-flip-digits", tiny(train={"augment": "flip-crop"}), "a mirrored digit is not the same digit")
run_config("hidden-sizes-2-62", tiny(model={"hidden_sizes": [2**62]}), "widths must be at most 65,536")
run_config("hidden-sizes-zero", tiny(model={"hidden_sizes": [0]}), "widths must be positive")
run_config("hidden-sizes-empty", tiny(model={"hidden_sizes": []}), "model.hidden_sizes")
run_config("hidden-sizes-65-layers", tiny(model={"hidden_sizes": [8] * 65}), "model.hidden_sizes")
run_config("channels-2-40", tiny(model={"architecture": "cnn", "channels": [2**40]}), "widths must be at most 65,536")
run_config("architecture-unknown", tiny(model={"architecture": "resnet"}), "model.architecture")
run_config("wrn-depth-11", tiny(model={"architecture": "wrn", "depth": 11}), "model.depth")
run_config("data-source-unknown", tiny(data={"source": "mnist"}), "data.source")
run_config("data-source-arrays", tiny(data={"source": "arrays"}), "data.source 'arrays'")
run_config("data-npz-without-path", tiny(data={"source": "npz"}), "source 'npz' needs a path")
run_config("data-path-on-builtin", tiny(data={"path": "pool.npz"}), "path is only for sources")
run_config("data-csv-without-columns", tiny(data={"source": "csv", "path": "t.csv"}), "source 'csv' needs columns")
run_config("data-columns-on-images", tiny(data={"columns": {"label": "y", "numeric": ["a"]}}),
           "columns are only for tables")
run_config("data-columns-both-rest",
           tiny(data={"source": "csv", "path": "t.csv",
                      "columns": {"label": "y", "numeric": "rest", "categorical": "rest"}}),
           "cannot both be 'rest'")
run_config("query-first-view-not-identity", tiny(query={"views": ["mirror"]}), "the first view must be 'identity'")
run_config("query-views-and-count", tiny(query={"views": ["identity"], "count": 2}), "give views or count, not both")
run_config("query-count-1000", tiny(query={"count": 1000}), "query.count")
run_config("query-flip-without-count", tiny(query={"flip": True}), "flip goes with count")
run_config("query-signals-dtype-float64", tiny(query={"signals_dtype": "float64"}), "query.signals_dtype")
run_config("attacks-unknown", tiny(attacks=["lira-onlin"]), "unknown attack 'lira-onlin'")
run_config("attacks-duplicate", tiny(attacks=["lira-online", "lira-online"]), "attacks must be distinct")
run_config("attacks-empty", tiny(attacks=[]), "attacks: tuple should have at least 1 item")
run_config("attacks-not-a-list", tiny(attacks=7), "attacks: input should be a valid tuple")
run_config("rmia-gamma-zero", tiny(rmia={"gamma": 0}), "rmia.gamma")
run_config("rmia-offline-a-2", tiny(rmia={"offline_a": 2}), "rmia.offline_a: must be a number in [0, 1]")
run_config("rmia-population-zero", tiny(rmia={"population": 0}), "rmia.population")
run_config("metrics-confidence-1-5", tiny(metrics={"confidence": 1.5}), "metrics.confidence")
run_config("metrics-delta-2", tiny(metrics={"delta": 2}), "metrics.delta")
run_config("metrics-bootstrap-negative", tiny(metrics={"bootstrap": -1}), "metrics.bootstrap")
run_config("replicas-1e6", tiny(poison={"replicas": 10**6}),
           "poison.replicas: input should be less than or equal to 10000")
run_config("replicas-negative", tiny(poison={"replicas": -1}), "poison.replicas")
run_config("poison-strategy-unknown", tiny(poison={"strategy": "sneaky"}), "unknown poison strategy 'sneaky'")
run_config("poison-strategy-clean", tiny(poison={"strategy": "clean"}), "'clean' is the baseline")
run_config("poison-perturbed-without-norm", tiny(poison={"strategy": {"kind": "perturbed"}}),
           "poison.strategy.perturbed.norm")

# defense sections
run_config("defense-unknown", tiny(defense="firewall"), "unknown defense 'firewall'")
run_config("defense-kindless", tiny(defense={"fraction": 0.1}), "a defense needs its kind")
run_config("defense-dp-sgd-epsilon-zero", tiny(defense={"kind": "dp-sgd", "epsilon": 0}),
           "defense.dp-sgd.epsilon")
run_config("defense-dp-sgd-with-augment", tiny(defense="dp-sgd", train={"augment": "crop"}),
           "defense dp-sgd trains without augmentation")
run_config("defense-near-duplicates-without-radius", tiny(defense="near-duplicates"),
           "defense.near-duplicates.radius")
run_config("defense-loss-filter-fraction-0-6", tiny(defense={"kind": "loss-filter", "fraction": 0.6}),
           "defense.loss-filter.fraction")
run_config("defenses-on-membership", tiny(defenses=["dedup-exact"]), "defenses and strategies for task 'defenses'")
DEFENSES = tiny(task="defenses", defenses=["dedup-exact"])
run_config("defense-on-defenses-task", merged(DEFENSES, {"defense": "dedup-exact"}), "lists its rows in defenses")
run_config("defenses-task-without-defenses", merged(DEFENSES, {"defenses": DELETE}), "defenses: field required")
run_config("defenses-none-listed", merged(DEFENSES, {"defenses": ["none"]}), "'none' is the baseline")
run_config("defenses-twice", merged(DEFENSES, {"defenses": ["dedup-exact", "dedup-exact"]}),
           "each defense kind at most once")
run_config("defenses-zero-replicas", merged(DEFENSES, {"poison": {"replicas": 0}}), "needs poison.replicas >= 1")

# task-specific sections on the wrong task
run_config("lm-section-on-membership", tiny(lm={"num_models": 6}), "the lm section is for task 'lm'")
run_config("untargeted-section-on-membership", tiny(untargeted={"adversary_fraction": 0.3}),
           "the untargeted section is for task 'untargeted'")
UNTARGETED = merged(tiny(task="untargeted"), {"design": {"num_targets": DELETE}, "poison": DELETE})
run_config("poison-on-untargeted", merged(UNTARGETED, {"poison": {"replicas": 2}}), "does not use poison")
run_config("num-targets-on-untargeted", merged(UNTARGETED, {"design": {"num_targets": 8}}),
           "does not use design.num_targets")
run_config("untargeted-fraction-one", merged(UNTARGETED, {"untargeted": {"adversary_fraction": 1.0}}),
           "untargeted.adversary_fraction")
run_config("untargeted-strategies-clean", merged(UNTARGETED, {"untargeted": {"strategies": ["clean-share"]}}),
           "'clean-share' is the baseline")
run_config("attribute-on-images", tiny(task="attribute", design={"num_models": 6}), "task 'attribute' needs a table")
run_config("attribute-four-models", tiny(task="attribute", data={"source": "cps", "pool_size": 300}),
           "task 'attribute' needs design.num_models >= 6")
run_config("attribute-with-attacks",
           tiny(task="attribute", data={"source": "cps"}, design={"num_models": 6}, attacks=["lira-online"]),
           "task 'attribute' runs its own attacks")

# the lm task's section
LM = {"task": "lm", "seed": 1, "lm": {"num_models": 2}}
run_config("lm-with-data-section", merged(LM, {"data": {"source": "digits"}}),
           "task 'lm' is configured in its lm section")
run_config("lm-num-models-odd", merged(LM, {"lm": {"num_models": 3}}), "num_models must be even")
run_config("lm-width-not-multiple-of-heads", merged(LM, {"lm": {"model": {"width": 65, "heads": 4}}}),
           "must be a multiple of lm.model.heads")
run_config("lm-hf-without-path", merged(LM, {"lm": {"model": {"kind": "hf"}}}), "needs lm.model.path")
run_config("lm-text-corpus-without-path", merged(LM, {"lm": {"corpus": {"source": "text"}}}), "needs lm.corpus.path")
run_config("lm-top-k-beyond-beam", merged(LM, {"lm": {"exposure": {"beam_width": 5, "top_k": [1, 10]}}}),
           "beam_width must be at least the largest")
run_config("lm-top-k-twice", merged(LM, {"lm": {"exposure": {"top_k": [1, 1]}}}), "top_k must be distinct")
run_config("lm-context-too-small", merged(LM, {"lm": {"model": {"context": 16}}}), "more than model.context")
run_config("lm-poisons-twice",
           merged(LM, {"lm": {"poisons": [{"strategy": "neutral", "count": 2}, {"strategy": "neutral", "count": 2}]}}),
           "poisons must be distinct")
run_config("lm-template-without-secret", merged(LM, {"lm": {"canaries": {"template": "the PIN of {name} is here"}}}),
           "lm.canaries.template")
run_config("lm-unknown-key", merged(LM, {"lm": {"num_model": 4}}), "lm.num_model: unknown key")
run_config("lm-canary-digits-13", merged(LM, {"lm": {"canaries": {"digits": 13}}}), "lm.canaries.digits")


@case("lm-corpus-file-missing", "nope.txt")
def _(ctx):
    return ["run", ctx.config(merged(LM, {"lm": {"corpus": {"source": "text", "path": "nope.txt"}}})), "--out", ctx.out]


# --------------------------------------------------------------------------------------------
# The user's own data: data.source npz


def npz_run(ctx: Ctx, path: str, **data: Any) -> list[str]:
    config = tiny(data={"source": "npz", "path": path, "pool_size": None, **data})
    return ["run", ctx.config(config), "--out", ctx.out]


def npz_case(id: str, fragment: str, arrays: Callable[[Ctx], dict] | dict, *, name: str = "pool.npz") -> None:
    def build(ctx: Ctx) -> list[str]:
        given = arrays(ctx) if callable(arrays) else arrays
        return npz_run(ctx, ctx.npz(name, **given))
    case(id, fragment)(build)


case("npz-missing", "no such file")(lambda ctx: npz_run(ctx, str(ctx.path("nope.npz"))))


@case("npz-is-directory", "is a directory")
def _(ctx):
    ctx.path("pool.npz").mkdir()
    return npz_run(ctx, str(ctx.path("pool.npz")))


case("npz-not-a-zip", "not a zip archive")(lambda ctx: npz_run(ctx, ctx.text("pool.npz", "x,y\n1,2\n")))
case("npz-empty-file", "not a zip archive")(lambda ctx: npz_run(ctx, ctx.data("pool.npz", b"")))
case("npz-a-pickle", "not a zip archive")(lambda ctx: npz_run(ctx, ctx.data("pool.npz", pickle_bytes(ctx))))
case("npz-truncated-zip", "pool.npz")(
    lambda ctx: npz_run(ctx, ctx.data("pool.npz", npz_of_members({"x": npy(pool_arrays()["x"])})[:60])))
npz_case("npz-object-array", "object arrays", lambda ctx: {"x": object_array(ctx), "y": np.array([0, 1])})
npz_case("npz-missing-y", "missing array(s) ['y']", {"x": pool_arrays()["x"]})
npz_case("npz-x-1d", "x must have shape", {"x": np.zeros(40, np.float32), "y": pool_arrays()["y"]})
npz_case("npz-x-5d", "x must have shape", {"x": np.zeros((40, 1, 1, 2, 2), np.float32), "y": pool_arrays()["y"]})
npz_case("npz-x-strings", "x must be numeric", {"x": np.full((40, 2), "a"), "y": pool_arrays()["y"]})
npz_case("npz-x-empty-features", "empty feature axis", {"x": np.zeros((40, 0), np.float32), "y": pool_arrays()["y"]})
npz_case("npz-no-rows", "the dataset is empty", {"x": np.zeros((0, 4), np.float32), "y": np.zeros(0, np.int64)})
npz_case("npz-y-2d", "y must have shape (n,)", {"x": pool_arrays()["x"], "y": np.zeros((40, 2), np.int64)})
npz_case("npz-lengths-differ", "x has 40 rows but y has 39 labels",
         {"x": pool_arrays()["x"], "y": pool_arrays()["y"][:39]})
npz_case("npz-x-nan", "nan or inf", {**pool_arrays(), "x": np.where(np.eye(40, 4, dtype=bool), np.nan, 1.0)})
npz_case("npz-x-inf", "nan or inf", {**pool_arrays(), "x": np.full((40, 4), np.inf, np.float32)})
npz_case("npz-labels-float-1e30", "1e+30", {"x": pool_arrays()["x"], "y": np.where(np.arange(40) % 2, 1e30, 0.0)})
npz_case("npz-labels-negative", "labels must be non-negative", {"x": pool_arrays()["x"], "y": np.arange(40) % 2 - 1})
npz_case("npz-labels-fractional", "y must hold integer class labels",
         {"x": pool_arrays()["x"], "y": np.arange(40) % 2 + 0.5})
npz_case("npz-labels-strings", "y must hold integer class labels",
         {"x": pool_arrays()["x"], "y": np.array(["a", "b"] * 20)})
npz_case("npz-one-class", "need at least two classes", {"x": pool_arrays()["x"], "y": np.zeros(40, np.int64)})
npz_case("npz-label-gap", "without a point", {"x": pool_arrays()["x"], "y": (np.arange(40) % 2) * 2})
npz_case("npz-num-classes-2-62", "num_classes", {**pool_arrays(), "num_classes": np.int64(2**62)})
npz_case("npz-num-classes-int64-max", "num_classes", {**pool_arrays(), "num_classes": np.int64(np.iinfo(np.int64).max)})
npz_case("npz-num-classes-float", "num_classes must be a single integer",
         {**pool_arrays(), "num_classes": np.float64(2)})
npz_case("npz-num-classes-below-labels", "labels must lie in 0..1",
         {**pool_arrays(classes=3), "num_classes": np.int64(2)})
npz_case("npz-three-points", "too few for design.num_targets",
         {"x": np.eye(3, dtype=np.float32), "y": np.array([0, 1, 0])})


@case("npz-header-too-long", "pool.npz: cannot read arrays safely (header info length (200")
def _(ctx):
    arrays = pool_arrays()
    members = {"x": npy_bytes((40, 4), data=arrays["x"].tobytes(), pad=200_000), "y": npy(arrays["y"])}
    return npz_run(ctx, ctx.data("pool.npz", npz_of_members(members)))


@case("npz-header-huge-shape", "pool.npz: array x claims shape (10000000000000, 4)")
def _(ctx):
    members = {"x": npy_bytes((10**13, 4), data=b"\0" * 64), "y": npy(pool_arrays()["y"])}
    return npz_run(ctx, ctx.data("pool.npz", npz_of_members(members)))


# --------------------------------------------------------------------------------------------
# The user's own tables: data.source csv (and the folders of adult and cifar10)

COLUMNS = {"label": "y", "numeric": ["a", "b"]}


def csv_run(ctx: Ctx, text: str | None, columns: dict = COLUMNS, name: str = "t.csv") -> list[str]:
    path = ctx.text(name, text) if text is not None else str(ctx.path(name))
    config = tiny(data={"source": "csv", "path": path, "columns": columns, "pool_size": None})
    return ["run", ctx.config(config), "--out", ctx.out]


GOOD_ROWS = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40))
case("csv-missing", "file not found")(lambda ctx: csv_run(ctx, None))
case("csv-empty", "the file is empty")(lambda ctx: csv_run(ctx, ""))
case("csv-header-only", "has a header but no rows")(lambda ctx: csv_run(ctx, "a,b,y\n"))
case("csv-missing-column", "unknown column 'zz' for data.columns.numeric")(
    lambda ctx: csv_run(ctx, "a,b,y\n" + GOOD_ROWS, {"label": "y", "numeric": ["a", "zz"]}))
case("csv-missing-label-column", "unknown column 'label' for data.columns.label")(
    lambda ctx: csv_run(ctx, "a,b,y\n" + GOOD_ROWS, {"label": "label", "numeric": ["a"]}))
case("csv-ragged-row", "line 3 has 2 fields but the header has 3")(
    lambda ctx: csv_run(ctx, "a,b,y\n1,2,0\n3,4\n" + GOOD_ROWS))
case("csv-missing-value", "column 'a' has 1 missing value")(lambda ctx: csv_run(ctx, "a,b,y\n,2,0\n" + GOOD_ROWS))
case("csv-not-a-number", "column 'b' is numeric but line 2 holds 'abc'")(
    lambda ctx: csv_run(ctx, "a,b,y\n1,abc,0\n" + GOOD_ROWS))
case("csv-infinite", "not finite")(lambda ctx: csv_run(ctx, "a,b,y\n1,inf,0\n" + GOOD_ROWS))
case("csv-header-twice", "names column 'a' twice")(lambda ctx: csv_run(ctx, "a,b,a,y\n" + "1,2,3,0\n" * 10))
case("csv-single-label", "has a single value")(lambda ctx: csv_run(ctx, "a,b,y\n" + "1,2,0\n" * 40))


@case("csv-not-utf8", "not valid utf-8")
def _(ctx):
    ctx.data("t.csv", b"a,b,y\n1,2,\xff\n")
    return csv_run(ctx, None)


case("csv-three-rows", "only 3 rows")(lambda ctx: csv_run(ctx, "a,b,y\n1,2,0\n3,4,1\n5,6,0\n"))
case("csv-stray-quote", "malformed csv")(lambda ctx: csv_run(ctx, 'a,b,y\n1,"2"x,0\n' + GOOD_ROWS))
case("csv-label-also-sensitive", "is both data.columns.label and data.columns.sensitive")(
    lambda ctx: csv_run(ctx, "a,b,y\n" + GOOD_ROWS, {"label": "y", "sensitive": "y", "numeric": ["a"]}))
case("csv-column-two-roles", "column 'a' is used for both")(
    lambda ctx: csv_run(ctx, "a,b,y\n" + GOOD_ROWS, {"label": "y", "numeric": ["a"], "categorical": ["a"]}))


@case("csv-is-directory", "is a directory")
def _(ctx):
    ctx.path("t.csv").mkdir()
    return csv_run(ctx, None)


@case("cifar10-folder-missing", "cifar-10-batches-bin")
def _(ctx):
    return ["run", ctx.config(tiny(data={"source": "cifar10", "path": str(ctx.path("cifar")), "pool_size": None})),
            "--out", ctx.out]


@case("adult-files-missing", "adult.data not found")
def _(ctx):
    ctx.path("adult").mkdir()
    return ["run", ctx.config(tiny(data={"source": "adult", "path": str(ctx.path("adult")), "pool_size": None})),
            "--out", ctx.out]


# --------------------------------------------------------------------------------------------
# Signals files: truthserum attack --signals


def attack_signals(ctx: Ctx, *extra: str, name: str = "sig.npz", **changes: Any) -> list[str]:
    """``attack --signals`` on the base signals with ``changes`` (None drops an array)."""
    arrays = {**signals_arrays(), **changes}
    path = ctx.npz(name, **{key: value for key, value in arrays.items() if value is not None})
    return ["attack", "--signals", path, "--out", str(ctx.path("attack-out")), *FAST, *extra]


def signals_case(id: str, fragment: str, *extra: str, **changes: Any) -> None:
    case(id, fragment)(lambda ctx: attack_signals(ctx, *extra, **changes))


BASE = signals_arrays()
case("signals-missing", "no such file")(
    lambda ctx: ["attack", "--signals", str(ctx.path("nope.npz")), "--out", str(ctx.path("attack-out"))])


@case("signals-is-directory", "is a directory")
def _(ctx):
    ctx.path("sig.npz").mkdir()
    return ["attack", "--signals", str(ctx.path("sig.npz")), "--out", str(ctx.path("attack-out"))]


case("signals-not-a-zip", "not a zip archive")(
    lambda ctx: ["attack", "--signals", ctx.text("sig.npz", "logits\n"), "--out", str(ctx.path("attack-out"))])
case("signals-a-pickle", "not a zip archive")(
    lambda ctx: ["attack", "--signals", ctx.data("sig.npz", pickle_bytes(ctx)), "--out", str(ctx.path("attack-out"))])
case("signals-object-logits", "object arrays")(lambda ctx: attack_signals(ctx, logits=object_array(ctx)))
signals_case("signals-without-keep", "missing array(s) ['keep']", keep=None)
signals_case("signals-without-labels", "missing array(s) ['labels']", labels=None)
signals_case("signals-without-logits-or-file-beside", "sig-logits.npy is not beside it", logits=None)
signals_case("signals-logits-nan", "logits contain nan or inf",
             logits=np.where(np.ones((8, 40, 3), bool) & (np.arange(3) == 1), np.nan, 0.5))
signals_case("signals-logits-inf", "logits contain nan or inf", logits=np.full((8, 40, 3), -np.inf))
signals_case("signals-logits-float64-1e308", "1e+308",
             logits=np.where(np.arange(3) == 0, 1e308, -1e308) * np.ones((8, 40, 3)))
signals_case("signals-logits-integers", "logits must be floating point", logits=np.ones((8, 40, 3), np.int64))
signals_case("signals-logits-2d", "logits must be (m, n, c) or (m, n, a, c)", logits=np.zeros((8, 40)))
signals_case("signals-logits-5d", "logits must be (m, n, c) or (m, n, a, c)", logits=np.zeros((8, 40, 1, 1, 3)))
signals_case("signals-one-model", "at least 2 models", logits=BASE["logits"][:1], keep=BASE["keep"][:1])
signals_case("signals-one-class", "2 classes", logits=BASE["logits"][..., :1], labels=np.zeros(40, np.int64))
signals_case("signals-labels-wrong-length", "labels must have shape (40,)", labels=BASE["labels"][:39])
signals_case("signals-labels-float", "labels must be integers", labels=BASE["labels"].astype(float))
signals_case("signals-labels-out-of-range", "labels must lie in 0..2", labels=np.full(40, 3))
signals_case("signals-labels-negative", "labels must lie in 0..2", labels=np.full(40, -1))
signals_case("signals-keep-not-boolean", "keep must be boolean", keep=BASE["keep"].astype(np.int64))
signals_case("signals-keep-wrong-shape", "keep must have shape (8, 40)", keep=BASE["keep"].T)
signals_case("signals-targets-out-of-range", "targets must lie in 0..39", targets=np.array([0, 40]))
signals_case("signals-targets-negative", "targets must lie in 0..39", targets=np.array([-1, 3]))
signals_case("signals-targets-duplicate", "targets contain duplicates", targets=np.array([3, 3]))
signals_case("signals-targets-empty", "targets must be a non-empty", targets=np.zeros(0, np.int64))
signals_case("signals-targets-float", "targets must be integers", targets=np.array([1.0, 2.0]))
signals_case("signals-targets-2d", "targets must be a non-empty 1-d", targets=np.arange(4).reshape(2, 2))
signals_case("signals-probabilities-out-of-range", "outside [0, 1]", "--logits-kind", "probabilities")
signals_case("signals-target-in-every-model", "--skip-unsupported",
             keep=np.where(np.arange(40) == 0, True, BASE["keep"]))


@case("signals-logits-beside-float64", "float32 or float16")
def _(ctx):
    np.save(ctx.path("sig-logits.npy"), BASE["logits"][:, :, None, :].astype(np.float64))
    return attack_signals(ctx, logits=None)


@case("signals-logits-beside-truncated", "sig-logits.npy")
def _(ctx):
    ctx.data("sig-logits.npy", npy(BASE["logits"][:, :, None, :])[:-40])
    return attack_signals(ctx, logits=None)


@case("signals-logits-beside-not-npy", "not a readable .npy")
def _(ctx):
    ctx.text("sig-logits.npy", "not an array\n")
    return attack_signals(ctx, logits=None)


@case("signals-header-huge-shape", "sig.npz")
def _(ctx):
    members = {"logits": npy_bytes((10**6, 10**6, 3), data=b"\0" * 64), "labels": npy(BASE["labels"]),
               "keep": npy(BASE["keep"])}
    return ["attack", "--signals", ctx.data("sig.npz", npz_of_members(members)), "--out", str(ctx.path("attack-out"))]


# attack options
case("option-shadow-models-odd", "shadow models must be even")(lambda ctx: attack_signals(ctx, "--shadow-models", "3"))
case("option-shadow-models-negative", "--shadow-models: -2 is negative")(
    lambda ctx: attack_signals(ctx, "--shadow-models", "-2"))
case("option-shadow-models-too-many",
     "64 shadow models asked for")(lambda ctx: attack_signals(ctx, "--shadow-models", "64"))
case("option-shadow-models-word",
     "'many' is not a whole number")(lambda ctx: attack_signals(ctx, "--shadow-models", "many"))
case("option-shadow-models-two", "give one number")(lambda ctx: attack_signals(ctx, "--shadow-models", "2,4"))
case("option-rmia-offline-a-2", "offline_a: must be a number in [0, 1]")(
    lambda ctx: attack_signals(ctx, "--rmia-offline-a", "2"))
case("option-rmia-offline-a-word", "--rmia-offline-a must be a number")(
    lambda ctx: attack_signals(ctx, "--rmia-offline-a", "half"))
case("option-rmia-gamma-negative", "rmia gamma")(lambda ctx: attack_signals(ctx, "--rmia-gamma", "-1"))
case("option-rmia-gamma-nan", "rmia gamma")(lambda ctx: attack_signals(ctx, "--rmia-gamma", "nan"))
case("option-rmia-population-zero", "rmia population")(lambda ctx: attack_signals(ctx, "--rmia-population", "0"))
case("option-seed-negative", "the seed must be an integer in 0..9223372036854775807")(
    lambda ctx: attack_signals(ctx, "--seed", "-1"))
case("option-logits-with-signals", "--logits is for --plan")(
    lambda ctx: attack_signals(ctx, "--logits", str(ctx.path("l.npz"))))


@case("option-out-npz-without-attack", "a .npz receives one attack's scores")
def _(ctx):
    argv = attack_signals(ctx)
    return [*argv[:4], str(ctx.path("scores.npz")), *argv[5:]]


@case("option-out-npz-with-all", "a .npz receives one attack's scores")
def _(ctx):
    argv = attack_signals(ctx, "--attack", "all")
    return [*argv[:4], str(ctx.path("scores.npz")), *argv[5:]]


# attack --out: where the results would go
def attack_out(ctx: Ctx, out: str, *extra: str) -> list[str]:
    argv = attack_signals(ctx, *extra)
    return [*argv[:4], out, *argv[5:]]


case("attack-out-existing-text-file", "exists and is not a directory")(
    lambda ctx: attack_out(ctx, ctx.text("notes.txt", "my notes\n")))
case("attack-out-existing-foreign-npz", "exists and is not an earlier scores file")(
    lambda ctx: attack_out(ctx, ctx.npz("mine.npz", weights=np.arange(3)), "--attack", "lira-online"))
case("attack-out-is-the-signals-file", "would overwrite the signals file")(
    lambda ctx: attack_out(ctx, str(ctx.path("sig.npz")), "--attack", "lira-online"))
case("attack-out-inside-a-file", "not a directory")(
    lambda ctx: attack_out(ctx, str(Path(ctx.text("notes.txt", "my notes\n")) / "results")))
case("attack-out-foreign-folder", "not empty")(
    lambda ctx: attack_out(ctx, str(Path(ctx.text("mine/notes.txt", "my notes\n")).parent)))
case("attack-out-plan-folder", "is a truthserum plan directory")(
    lambda ctx: attack_out(ctx, str(Path(ctx.text("plan/plan.json", "{}\n")).parent)))


@case("attack-out-would-overwrite-signals", "is an input of this attack")
def _(ctx):
    signals = ctx.npz("d/scores.npz", **BASE)  # --out d would write d/scores.npz over it
    return ["attack", "--signals", signals, "--out", str(ctx.path("d")), *FAST]


# --------------------------------------------------------------------------------------------
# run --out, plan and attack --plan misuse (outside the guard)

case("run-out-is-a-file", "exists and is not a directory")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", ctx.text("notes.txt", "my notes\n")])
case("run-out-foreign-folder", "not a truthserum run directory")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", str(Path(ctx.text("mine/notes.txt", "my notes\n")).parent)])
case("run-out-inside-a-file", "not a directory")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", str(Path(ctx.text("notes.txt", "my notes\n")) / "run")])
case("run-out-unreadable-config", "unreadable")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", str(Path(ctx.text("old/config.yaml", "seed: [\n")).parent)])
case("run-cpus-per-shard-local", "--cpus-per-shard is for --backend ray")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", ctx.out, "--cpus-per-shard", "2"])
case("run-ray-cpus-per-shard-zero", "--cpus-per-shard must be at least 1")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", ctx.out, "--backend", "ray", "--cpus-per-shard", "0"])
case("run-address-without-ray", "--address is for")(
    lambda ctx: ["run", ctx.config(TINY_CONFIG), "--out", ctx.out, "--address", "auto"])
case("demo-cpus-per-shard-local", "--cpus-per-shard is for --backend ray")(
    lambda ctx: ["demo", "--out", ctx.out, "--cpus-per-shard", "3"])
case("sweep-replicas-negative", "--replicas: -1 is negative")(
    lambda ctx: ["sweep", ctx.config(TINY_CONFIG), "--out", ctx.out, "--replicas", "0,-1"])
case("sweep-replicas-twice", "give distinct values")(
    lambda ctx: ["sweep", ctx.config(TINY_CONFIG), "--out", ctx.out, "--replicas", "2,2"])
case("sweep-shadow-models-odd-fresh", "--shadow-models 3")(
    lambda ctx: ["sweep", ctx.config(TINY_CONFIG), "--out", ctx.out, "--shadow-models", "3"])
case("sweep-on-untargeted", "sweep the membership task, not")(
    lambda ctx: ["sweep", ctx.config(UNTARGETED), "--out", ctx.out, "--replicas", "0,2"])
case("plan-other-task", "truthserum plan is for task 'membership'")(
    lambda ctx: ["plan", ctx.config(UNTARGETED), "--out", ctx.out])
case("plan-with-defense", "truthserum plan writes exact replicas")(
    lambda ctx: ["plan", ctx.config(tiny(defense="dedup-exact")), "--out", ctx.out])
case("plan-out-is-a-file", "exists and is not a directory")(
    lambda ctx: ["plan", ctx.config(TINY_CONFIG), "--out", ctx.text("notes.txt", "my notes\n")])
case("plan-out-foreign-folder", "not empty and not an earlier plan")(
    lambda ctx: ["plan", ctx.config(TINY_CONFIG), "--out", str(Path(ctx.text("mine/notes.txt", "my notes\n")).parent)])
case("plan-missing-config", "no such config file")(lambda ctx: ["plan", str(ctx.path("nope.yaml")), "--out", ctx.out])
case("attack-plan-without-logits", "--plan needs --logits")(lambda ctx: ["attack", "--plan", str(ctx.path("plan"))])
case("attack-plan-missing", "no such plan directory")(
    lambda ctx: ["attack", "--plan", str(ctx.path("plan")), "--logits", str(ctx.path("l.npz"))])


@case("attack-plan-empty-folder", "not a plan directory")
def _(ctx):
    ctx.path("plan").mkdir()
    return ["attack", "--plan", str(ctx.path("plan")), "--logits", str(ctx.path("l.npz"))]


case("attack-plan-out-npz", "with --plan, --out names a directory")(
    lambda ctx: ["attack", "--plan", str(ctx.path("plan")), "--logits", str(ctx.path("l.npz")), "--out",
                 str(ctx.path("s.npz"))])


def fake_plan(ctx: Ctx, **description: Any) -> str:
    ctx.text("plan/plan.json", json.dumps({"format": "truthserum-plan", **description}))
    return str(ctx.path("plan"))


case("attack-plan-unfinished", "an unfinished plan")(
    lambda ctx: ["attack", "--plan", fake_plan(ctx, format_version=1, complete=False), "--logits",
                 str(ctx.path("l.npz"))])
case("attack-plan-other-version", "a plan of format 99")(
    lambda ctx: ["attack", "--plan", fake_plan(ctx, format_version=99, complete=True), "--logits",
                 str(ctx.path("l.npz"))])
case("attack-plan-damaged", "damaged")(
    lambda ctx: ["attack", "--plan", fake_plan(ctx, format_version=1, complete=True), "--logits",
                 str(ctx.path("l.npz"))])


def real_plan(ctx: Ctx) -> str:
    from truthserum.config import parse_config
    from truthserum.tasks.plan import write_plan

    write_plan(config=parse_config(TINY_CONFIG), out_dir=ctx.path("plan"), log=lambda _: None)
    return str(ctx.path("plan"))


def plan_logits(ctx: Ctx, **arrays: Any) -> list[str]:
    plan = real_plan(ctx)
    return ["attack", "--plan", plan, "--logits", ctx.npz("logits.npz", **arrays), *FAST]


PLAN_LOGITS = np.zeros((4, 300, 10), np.float32)
case("attack-plan-logits-missing-condition", "no array for condition(s) poisoned")(
    lambda ctx: plan_logits(ctx, clean=PLAN_LOGITS))
case("attack-plan-logits-nan", "nan or infinite")(
    lambda ctx: plan_logits(ctx, clean=PLAN_LOGITS, poisoned=np.full_like(PLAN_LOGITS, np.nan)))
case("attack-plan-logits-wrong-models", "holds 3 models; the plan has 4")(
    lambda ctx: plan_logits(ctx, clean=PLAN_LOGITS, poisoned=PLAN_LOGITS[:3]))
case("attack-plan-logits-not-a-zip", "not a zip archive")(
    lambda ctx: ["attack", "--plan", real_plan(ctx), "--logits", ctx.text("logits.npz", "nope\n")])

# audit-plan options
for _id, _args, _fragment in (
    ("audit-plan-trials-word", ["--trials", "many"], "--trials must be whole numbers"),
    ("audit-plan-trials-empty", ["--trials", ""], "--trials must be whole numbers"),
    ("audit-plan-trials-one", ["--trials", "1"], "--trials must each be between 2 and 100,000"),
    ("audit-plan-trials-1e9", ["--trials", "1000000000"], "--trials must each be between 2 and 100,000"),
    ("audit-plan-delta-zero", ["--delta", "0"], "--delta must be in (0, 1)"),
    ("audit-plan-delta-one", ["--delta", "1"], "--delta must be in (0, 1)"),
    ("audit-plan-delta-nan", ["--delta", "nan"], "--delta must be in (0, 1)"),
    ("audit-plan-confidence-one", ["--confidence", "1"], "--confidence must be in [0.5, 1)"),
    ("audit-plan-confidence-0-4", ["--confidence", "0.4"], "--confidence must be in [0.5, 1)"),
):
    case(_id, _fragment)(lambda ctx, _args=_args: ["audit-plan", *_args])


# --------------------------------------------------------------------------------------------
# Against the finished guard run: every one must leave its files as they are

SAME = TINY_CONFIG
case("guard-run-other-seed", "was made by a different config")(
    lambda ctx: ["run", ctx.config(tiny(seed=4)), "--out", str(ctx.guard)])
case("guard-run-other-model", "was made by a different config")(
    lambda ctx: ["run", ctx.config(tiny(model={"hidden_sizes": [16]})), "--out", str(ctx.guard)])
case("guard-run-other-task", "was made by a different config")(
    lambda ctx: ["run", ctx.config(UNTARGETED), "--out", str(ctx.guard)])
case("guard-run-with-defense", "was made by a different config")(
    lambda ctx: ["run", ctx.config(tiny(defense="dedup-exact")), "--out", str(ctx.guard)])
case("guard-run-bad-confidence", "metrics.confidence")(
    lambda ctx: ["run", ctx.config(tiny(metrics={"confidence": 1.5})), "--out", str(ctx.guard)])
case("guard-run-unknown-attack", "unknown attack 'nope'")(
    lambda ctx: ["run", ctx.config(tiny(attacks=["nope"])), "--out", str(ctx.guard)])
case("guard-run-cpus-per-shard", "--cpus-per-shard is for --backend ray")(
    lambda ctx: ["run", ctx.config(SAME), "--out", str(ctx.guard), "--cpus-per-shard", "4"])
case("guard-run-out-its-config-file", "exists and is not a directory")(
    lambda ctx: ["run", ctx.config(SAME), "--out", str(ctx.guard / "config.yaml")])
case("guard-run-out-its-shards-folder", "not a truthserum run directory")(
    lambda ctx: ["run", ctx.config(SAME), "--out", str(ctx.guard / "shards")])
case("guard-sweep-replicas-word", "'x' is not a whole number")(
    lambda ctx: ["sweep", ctx.config(SAME), "--out", str(ctx.guard), "--replicas", "0,x"])
case("guard-sweep-replicas-20000", "--replicas: 20000 is more than 10000")(
    lambda ctx: ["sweep", ctx.config(SAME), "--out", str(ctx.guard), "--replicas", "0,20000"])
case("guard-sweep-other-seed", "was made by a different config")(
    lambda ctx: ["sweep", ctx.config(tiny(seed=4)), "--out", str(ctx.guard), "--replicas", "0,2"])
case("guard-sweep-shadow-models-odd", "--shadow-models 3")(
    lambda ctx: ["sweep", ctx.config(SAME), "--out", str(ctx.guard), "--shadow-models", "3"])
case("guard-sweep-shadow-models-too-many", "--shadow-models 8")(
    lambda ctx: ["sweep", ctx.config(SAME), "--out", str(ctx.guard), "--shadow-models", "8"])
case("guard-plan-into-run", "is a truthserum run directory, not a plan")(
    lambda ctx: ["plan", ctx.config(SAME), "--out", str(ctx.guard)])
case("guard-plan-out-its-design-file", "exists and is not a directory")(
    lambda ctx: ["plan", ctx.config(SAME), "--out", str(ctx.guard / "design.npz")])
case("guard-attack-out-run", "is a truthserum run directory")(
    lambda ctx: ["attack", "--signals", str(ctx.guard / "signals-clean.npz"), "--out", str(ctx.guard), *FAST])
case("guard-attack-out-its-signals", "would overwrite the signals file")(
    lambda ctx: ["attack", "--signals", str(ctx.guard / "signals-clean.npz"), "--attack", "lira-online",
                 "--out", str(ctx.guard / "signals-clean.npz")])
case("guard-attack-out-its-scores", "exists and is not an earlier scores file")(
    lambda ctx: ["attack", "--signals", str(ctx.guard / "signals-clean.npz"), "--attack", "lira-online",
                 "--out", str(ctx.guard / "scores-clean.npz")])
case("guard-attack-out-its-results-json", "exists and is not a directory")(
    lambda ctx: ["attack", "--signals", str(ctx.guard / "signals-clean.npz"), "--out", str(ctx.guard / "results.json")])
case("guard-attack-plan-on-run", "not a plan directory")(
    lambda ctx: ["attack", "--plan", str(ctx.guard), "--logits", ctx.npz("l.npz", clean=PLAN_LOGITS)])
case("guard-attack-out-its-shards-folder", "not empty")(
    lambda ctx: ["attack", "--signals", str(ctx.guard / "signals-clean.npz"), "--out", str(ctx.guard / "shards"),
                 *FAST])


@case("run-locked-by-another-process", "another truthserum run")
def _(ctx):
    """A copy of the finished run, locked by a live process (flock on its .lock, as a run holds
    it): the same config must neither resume nor rescore it."""
    import shutil

    copy_dir = ctx.path("locked-run")
    shutil.copytree(ctx.guard, copy_dir)
    script = ("import fcntl, os, sys\n"
              "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
              "os.ftruncate(fd, 0)\n"
              "os.write(fd, f'pid {os.getpid()}: the lock holder of tests/test_bad_inputs.py\\n'.encode())\n"
              "print('locked', flush=True)\n"
              "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(copy_dir / ".lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    def release():
        holder.stdin.close()
        holder.wait(timeout=10)

    ctx.cleanups.append(release)
    return ["run", ctx.config(SAME), "--out", str(copy_dir), "--quiet"]


# --------------------------------------------------------------------------------------------
# Named pipes (and a YAML alias bomb): run in a child process, since a reader may block forever

case("fifo-attack-out-npz", "not a regular file", fifo=True)(
    lambda ctx: ["attack", "--signals", ctx.npz("sig.npz", **BASE), "--attack", "lira-online", "--out",
                 ctx.fifo("scores.npz"), *FAST])
case("fifo-config", "not a regular file", fifo=True)(lambda ctx: ["run", ctx.fifo("config.yaml"), "--out", ctx.out])


@case("fifo-results-in-attack-out", "and not an earlier output of truthserum attack", fifo=True)
def _(ctx):
    ctx.path("attack-out").mkdir()
    ctx.fifo("attack-out/results.json")
    return ["attack", "--signals", ctx.npz("sig.npz", **BASE), "--attack", "lira-online", "--out",
            str(ctx.path("attack-out")), *FAST]


@case("fifo-lock-file", "not a lock file", fifo=True)
def _(ctx):
    ctx.path("run").mkdir()
    ctx.fifo("run/.lock")
    return ["run", ctx.config(tiny()), "--out", str(ctx.path("run")), "--quiet"]


@case("fifo-csv-data", "not a regular file", fifo=True)
def _(ctx):
    ctx.fifo("t.csv")
    return csv_run(ctx, None)


case("fifo-signals", "not a regular file", fifo=True)(
    lambda ctx: ["attack", "--signals", ctx.fifo("sig.npz"), "--out", str(ctx.path("attack-out"))])
case("fifo-npz-data", "not a regular file", fifo=True)(lambda ctx: npz_run(ctx, ctx.fifo("pool.npz")))


@case("yaml-alias-bomb", "alias", fifo=True)
def _(ctx):
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return ["run", ctx.text("config.yaml", "\n".join(lines) + "\n"), "--out", ctx.out]


IN_PROCESS = [c for c in CASES if not c.fifo]
IN_CHILD = [c for c in CASES if c.fifo]
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
