"""One experiment: parameters -> validated config -> trained model -> evaluated record (a JSON-able dict).

The run notebook calls :func:`run`; so do the CLI and the sweeps. Every parameter is checked before any
training starts, and an error names the parameter and its allowed values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, distributed
from .archs import ARCHS, VLM, backbones_needed, build, get_arch
from .backbones import Backbones, load_backbones
from .backbones import cache
from .backbones.cache import cache_root, config_key
from .budgets import BUDGETS, Budget, get_budget
from .data.run_data import SourceData, WorldData, run_data
from .checks import article, check_output_dir, check_seed
from .device import PRECISIONS, pick_device, seed_everything
from .evaluate import evaluate
from .generate import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT
from .jsonio import PENDING, params_hash, write_json_atomic
from .train import NonFiniteLoss, train_stages
from .world import World, WorldConfig


@dataclass(frozen=True)
class RunConfig:
    arch: str = "llava"
    knobs: dict = field(default_factory=dict)
    seed: int = 0
    budget: str = "default"
    precision: str = "fp32"
    device: str = "auto"
    references: bool = True  # also compute (or reuse) the blind floor and the text-oracle ceiling
    # what it trains and evaluates on (vlmlab.data.sources): the world, or a LLaVA JSON file / datasets directory
    data: str = "world"
    eval_data: str | None = None  # None: a seeded held-out 10 % of the training data
    image_root: str | None = None  # where a LLaVA file's image paths start (None: the file's folder)
    # how it runs, not what it computes (left out of resolved(), so of records and cache keys): save the training
    # state into <output_dir>/checkpoints every so many steps (0: never), and continue from the latest one there
    checkpoint_every: int = 0
    resume: bool = False
    # the longest free-form answer generated on a data source (the world keeps its one-word scoring)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    @classmethod
    def from_params(cls, arch="llava", knobs=None, seed=0, budget="default", precision="fp32", device="auto",
                    references=True, output_dir=None, data="world", eval_data=None, image_root=None,
                    checkpoint_every=0, resume=False, max_new_tokens=DEFAULT_MAX_NEW_TOKENS) -> "RunConfig":
        """Validate user parameters (e.g. from a papermill cell) and build the config; raises before training.
        The one check of a run's parameters: the CLI, the run notebook, the sweeps (at ``--list``) and
        :func:`run` call it. ``output_dir`` is only checked (it is not part of the config)."""
        _expect("arch", arch, str)
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is unknown; allowed values: {sorted(ARCHS)}")
        _expect("budget", budget, str)
        b = get_budget(budget)
        check_seed("seed", seed)
        knobs = _knobs_dict(knobs)
        _expect("precision", precision, str)
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; allowed values: {list(PRECISIONS)}")
        _expect("device", device, str)
        _expect("references", references, bool)
        check_output_dir("output_dir", output_dir)
        cls_ = get_arch(arch)
        built = cls_.KnobsClass.build(arch, knobs)  # validates names, types, values and combinations
        _check_vit_blocks(arch, built, b)
        from .data.sources import check_sources

        _expect("data", data, str)
        _check_max_new_tokens(max_new_tokens, data)
        eval_data, image_root = eval_data or None, image_root or None  # "" (a notebook's unset string) is none
        check_sources(data, eval_data, image_root)  # every row of the files, before any backbone loads
        _expect("checkpoint_every", checkpoint_every, int)
        if checkpoint_every < 0:
            raise ValueError(f"parameter 'checkpoint_every' must be an int >= 0 (optimizer steps between "
                             f"checkpoints; 0: none), got {checkpoint_every}")
        _expect("resume", resume, bool)
        return cls(arch, dict(knobs or {}), seed, budget, precision, device, references, data, eval_data, image_root,
                   checkpoint_every, resume, max_new_tokens=max_new_tokens)

    def resolved(self) -> dict:
        cls_ = get_arch(self.arch)
        out = {k: v for k, v in asdict(self).items() if k not in _HOW_IT_RUNS}
        if self.data == "world":
            del out["max_new_tokens"]  # it does not apply: the world's records and cache keys stay as they were
        return {**out, "knobs": asdict(cls_.KnobsClass.build(self.arch, self.knobs))}


_HOW_IT_RUNS = ("checkpoint_every", "resume")  # RunConfig fields that do not change a run's result
CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, inside its output directory


def checkpoint_dir(output_dir: str | Path) -> Path:
    """``<run dir>/checkpoints``. A notebook executed for the CLI or a sweep writes its record into
    ``<run dir>/.pending`` until it completes; its checkpoints belong to the run directory, where ``--resume``
    looks, and outlive a failed execution."""
    out = Path(output_dir)
    return (out.parent if out.name == PENDING else out) / CHECKPOINTS


def _expect(name, value, typ):
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if not ok:
        raise TypeError(f"parameter {name!r} must be {article(typ.__name__)}, got {value!r} "
                        f"({type(value).__name__})")


def _knobs_dict(knobs) -> dict:
    """Knobs as a dict; a JSON object string is read as one, since papermill's ``-p knobs '{...}'`` passes a
    string (its ``-y`` passes YAML, a dict)."""
    if knobs is None:
        return {}
    if isinstance(knobs, str):
        try:
            knobs = json.loads(knobs) if knobs.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"parameter 'knobs' must be a dict or a JSON object string, e.g. '{{\"table_size\": "
                             f"64}}'; got {knobs!r} ({e.msg} at character {e.pos})") from None
        if not isinstance(knobs, dict):
            raise TypeError(f"parameter 'knobs' must be a dict or a JSON object string, got the JSON "
                            f"{type(knobs).__name__} {knobs!r}")
    _expect("knobs", knobs, dict)
    return knobs


def _check_max_new_tokens(value, data) -> None:
    """An int in 1..MAX_NEW_TOKENS_LIMIT, and on the world only its default (the world scores one word)."""
    _expect("max_new_tokens", value, int)
    if not 1 <= value <= MAX_NEW_TOKENS_LIMIT:
        raise ValueError(f"parameter 'max_new_tokens'={value}; allowed values: 1..{MAX_NEW_TOKENS_LIMIT}")
    if data == "world" and value != DEFAULT_MAX_NEW_TOKENS:
        raise ValueError(f"parameter 'max_new_tokens'={value} applies to data other than 'world' (the world keeps "
                         f"its one-word scoring); leave it at {DEFAULT_MAX_NEW_TOKENS} or name a data source")


def _check_vit_blocks(arch: str, knobs, budget: Budget) -> None:
    """Knobs that index ViT blocks, checked against the budget's ViT depth (what the backbones a run loads have),
    so a bad index fails here and not after the backbones load."""
    depth = budget.vit_depth
    layer = getattr(knobs, "feature_layer", None)
    if layer is not None and not -depth <= layer < depth:
        raise ValueError(f"knob 'feature_layer' of arch={arch!r} got {layer}; the ViT of budget {budget.name!r} has "
                         f"{depth} blocks: allowed values {-depth}..{depth - 1}")
    if arch == "llavit":
        from .archs.llavit import feature_blocks

        feature_blocks(knobs.layers, depth)  # raises naming the knob 'layers' and the allowed block indices


def _non_finite_advice(config: "RunConfig", err: NonFiniteLoss) -> NonFiniteLoss:
    """The trainer's NonFiniteLoss with advice naming this run's knobs: which ones it moved from their defaults,
    or, at the defaults, the backbones and the precision (the only other inputs a user chooses)."""
    cls_ = get_arch(config.arch).KnobsClass
    defaults = {f.name: f.default for f in dataclasses.fields(cls_)}
    resolved = asdict(cls_.build(config.arch, config.knobs))
    moved = [f"{k}={v!r} (default {defaults[k]!r})" for k, v in resolved.items() if v != defaults[k]]
    if moved:
        hint = (f"this run sets knob(s) {', '.join(moved)} of arch={config.arch!r}: try values nearer the defaults; "
                f"if the defaults fail too, rebuild the backbones (vlmlab pretrain --budget {config.budget} --rebuild)")
    else:
        hint = (f"arch={config.arch!r} runs at its default knobs ({', '.join(defaults) or 'none'}), so the "
                f"inputs are suspect: rebuild the backbones (vlmlab pretrain --budget {config.budget} --rebuild)"
                + ("" if config.precision == "fp32" else f", or use precision='fp32' instead of {config.precision!r}"))
    return NonFiniteLoss(f"{err}; {hint}")


@dataclass
class Experiment:
    """What a run leaves behind for a notebook: the trained model, its world and the record (None on the ranks
    of a distributed run other than 0, which only train)."""

    config: RunConfig
    model: VLM
    world: World
    backbones: Backbones
    record: dict | None


def make_data(world: World, batch_size: int, grounding: float = 0.0, *, rank: int = 0, ranks: int = 1):
    """Training batch ``step`` of a task, of ``n`` samples (default ``batch_size``; a stage may use its own);
    ``grounding`` of the question tasks' questions are look-ups (``Budget.vlm_grounding``). Of ``ranks``
    processes, ``rank`` gets its consecutive ``n / ranks`` samples of each batch (together: the batch one process
    trains on)."""

    def data(task: str, step: int, n: int = batch_size) -> dict:
        if n % ranks:
            raise ValueError(f"{ranks} processes cannot share a batch of {n}: use a number of processes that "
                             f"divides it")
        per = n // ranks
        g = grounding if task in ("qa", "blind") else 0.0
        return world.batch(task, "train", step * n + rank * per, per, with_images=task != "blind",
                           grounding=g)
    return data


def _used_paths(bb: Backbones, kinds) -> dict:
    """The cache entries of the backbones a model reads: what its cached results depend on (loading more
    backbones than a model needs must not change its key). Real MIM backbones name their decoder apart."""
    kinds = set(kinds) | ({"mae_decoder"} if "mim" in kinds else set())
    return {k: v for k, v in bb.paths.items() if k in kinds}


def _used_ids(bb: Backbones, kinds) -> dict:
    """The identities (:func:`cache.fingerprint`) of the backbones a model reads: the part of a cache key that
    says which backbones its result was computed from, wherever the cache lives."""
    return {k: cache.fingerprint(v) for k, v in _used_paths(bb, kinds).items()}


def _references_path(bb: Backbones, world: World, budget: Budget, precision) -> Path:
    """The reference cache file of this world seed, budget, LM and precision (present or not)."""
    key = config_key({"refs": 3, "world": asdict(world.config), "seed": world.seed, "budget": budget.as_dict(),
                      "backbones": _used_ids(bb, ("lm",)), "precision": precision})
    return cache_root() / "references" / f"{key}.json"


def _references(bb: Backbones, world: World, budget: Budget, device, precision, progress) -> dict:
    """Blind floor and text-oracle ceiling for this world seed and budget, cached on disk by their inputs."""
    path = _references_path(bb, world, budget, precision)
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            cached = None
        if _valid_references(cached):
            return cached
        warnings.warn(f"rebuilding the malformed reference cache file {path}", stacklevel=2)
    out = {"wordings": {}}
    oracle = build("oracle", bb, budget).to(device)
    out["ceiling"] = evaluate(oracle, world, budget.eval_per_category, budget.eval_batch, precision=precision)
    out["wordings"]["ceiling"] = out["ceiling"].pop("wordings")
    out["valid"] = {"ceiling": out["ceiling"].pop("valid")}
    del oracle
    seed_everything(world.seed)
    blind = build("blind", bb, budget).to(device)
    data = make_data(world, budget.vlm_batch, budget.vlm_grounding)
    logs = train_stages(blind, blind.stages(), data, budget, device=device,
                        precision=precision, progress=progress)
    out["floor"] = evaluate(blind, world, budget.eval_per_category, budget.eval_batch, precision=precision)
    out["wordings"]["floor"] = out["floor"].pop("wordings")
    out["valid"]["floor"] = out["floor"].pop("valid")
    out["floor_final_loss"] = logs[0].losses[-1] if logs and logs[0].losses else None
    write_json_atomic(path, out)
    return out


def _valid_references(refs) -> bool:
    """Whether a cached references entry holds what :func:`_references` writes: the floor's and the ceiling's
    accuracies per split and their per-wording accuracies (anything else is rebuilt, not returned as None)."""
    if not isinstance(refs, dict) or not isinstance(refs.get("wordings"), dict):
        return False
    for ref in ("floor", "ceiling"):
        acc = refs.get(ref)
        if not (isinstance(acc, dict) and all(isinstance(acc.get(s), dict) and acc[s] for s in ("test",
                                                                                            "compositional"))):
            return False
        if not isinstance(refs["wordings"].get(ref), dict):
            return False
    return True


# the sources whose code decides what a trained model and its record are: a change to any of them retires the
# trained models cached under <cache>/models
_MODEL_SOURCES = ("archs", "world", "train.py", "attention.py", "evaluate.py", "budgets.py")


def _code_hash() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _MODEL_SOURCES:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _model_key(config: RunConfig, budget: Budget, bb: Backbones, device: torch.device, data_key=None) -> dict:
    resolved = {k: v for k, v in config.resolved().items() if k not in ("device", "references")}
    if data_key is None:  # the world: keyed as before data sources existed, so its cached models stay valid
        resolved = {k: v for k, v in resolved.items() if k not in ("data", "eval_data", "image_root")}
    used = _used_ids(bb, backbones_needed(config.arch, config.knobs))
    return {"model": 1, "config": resolved, "device": device.type, "budget": budget.as_dict(),
            "backbones": used, "code": _code_hash(), **({"data": data_key} if data_key is not None else {})}


def _store_model(key: dict, model: VLM, record: dict) -> None:
    from safetensors.torch import save_model

    def write(tmp: Path):
        save_model(model, str(tmp / "model.safetensors"))
        write_json_atomic(tmp / "record.json", record)
    try:
        with cache.build_lock("model", key, cache_root() / "models"):
            cache.store("model", key, write, cache_root() / "models")
    except OSError as e:  # a read-only cache costs only the reuse
        warnings.warn(f"could not cache the trained model: {e}", stacklevel=3)


def run(config: RunConfig, *, progress: bool = True, backbones: Backbones | None = None,
        output_dir: str | Path | None = None, reuse: bool = False) -> Experiment:
    """Train and evaluate one architecture; returns the experiment (model + record). Writes ``record.json``
    atomically into ``output_dir`` when given.

    Every trained model is cached (with its record) under ``<cache>/models``, keyed by the resolved config, the
    budget, the backbones and the source of the code that trains and evaluates it. ``reuse=True`` loads it from
    there instead of training when present (the teaching notebooks do; a sweep measures afresh); the record then
    carries ``"reused": <cache entry>`` and the timings of the run that trained it.

    ``config.checkpoint_every`` saves the training state into ``<output_dir>/checkpoints`` (:mod:`vlmlab.checkpoint`)
    and ``config.resume`` continues from the latest one there. Under torchrun the processes train one model with
    DDP (:mod:`vlmlab.distributed`) and rank 0 alone writes.
    """
    check_output_dir("output_dir", output_dir)  # before any work: a record that cannot be written is lost
    if (config.checkpoint_every or config.resume) and output_dir is None:
        raise ValueError("parameters 'checkpoint_every' and 'resume' need an output_dir: the checkpoints are kept "
                         f"in <output_dir>/{CHECKPOINTS}")
    budget = get_budget(config.budget)
    dist, device = distributed.setup(pick_device(config.device))
    try:
        return _run(config, budget, dist, device, progress, backbones, output_dir, reuse)
    finally:
        distributed.teardown(dist)


def _run(config: RunConfig, budget: Budget, dist, device, progress, backbones, output_dir, reuse) -> Experiment:
    """The experiment, config -> data -> backbones -> model -> train -> evaluate -> record, inside its one cache:
    a model trained before under the same key is reused when asked, and every newly trained one is stored."""
    writer = dist is None or dist.is_writer
    ranks = dist.world_size if dist is not None else 1
    if budget.vlm_batch % ranks:
        raise ValueError(f"{ranks} processes cannot share budget {budget.name!r}'s batch of {budget.vlm_batch}: "
                         "give a number of processes that divides it")
    t_start = time.perf_counter()
    inputs = _inputs(config, budget, device, progress, backbones)
    setup_s = time.perf_counter() - t_start
    key = _model_key(config, budget, inputs.backbones, device, inputs.source.key())
    if ranks > 1:  # gradients averaged over shards round differently from one batch's: another trained model
        key["world_size"] = ranks
    record = _reused(key, inputs.model, device) if reuse else None
    if record is not None and record.get("floor") is None and config.references and inputs.source.is_world:
        # a model stored by a run without references gets them now (they are the world's, cached on their own)
        record = _with_references(record, _references(inputs.backbones, inputs.world, budget, device,
                                                      config.precision, progress))
    if record is None:
        checkpoint = _checkpointing(config, output_dir, key, ranks, writer)
        logs, train_s = _train(config, inputs, budget, device, dist, checkpoint, progress and writer)
        if not writer:  # rank 0 evaluates and writes; the others' work ends with the training
            return Experiment(config, inputs.model, inputs.world, inputs.backbones, None)
        ev = _evaluate(config, inputs, budget, device, progress)
        record = _record(config, budget, inputs, ev, logs, train_s, key, device, dist, checkpoint,
                         time.perf_counter() - t_start)
        # where a run's time goes (benchmarks/run_overhead.py): what is not training or evaluating is overhead
        record["seconds"] = {"setup": setup_s, **ev["seconds"]}  # training: record["train_seconds"]
        _store_model(key, inputs.model, record)
    if output_dir is not None and writer:
        write_json_atomic(Path(output_dir) / "record.json", record)
    return Experiment(config, inputs.model, inputs.world, inputs.backbones, record if writer else None)


@dataclass
class _Inputs:
    """What a run trains: its data (the world, and the source it trains and is evaluated on), the backbones it
    reads and the model built on them."""

    world: World
    source: WorldData | SourceData
    backbones: Backbones
    model: VLM


def _inputs(config: RunConfig, budget: Budget, device, progress, backbones: Backbones | None) -> _Inputs:
    # only the backbones this arch reads: a first LLaVA run does not wait for the MIM encoder
    bb = backbones or load_backbones(WorldConfig(), budget, device=device, progress=progress,
                                     kinds=backbones_needed(config.arch, config.knobs))
    # backbones handed in (real checkpoints) bring their tokenizer: a data source's text is encoded as their LM reads it
    world = World(WorldConfig(), seed=config.seed, tokenizer=backbones.tokenizer if backbones is not None else None)
    source = run_data(config.data, config.eval_data, config.image_root, config.seed, config.max_new_tokens)
    seed_everything(config.seed)
    return _Inputs(world, source, bb, build(config.arch, bb, budget, config.knobs).to(device))


def _reused(key: dict, model: VLM, device) -> dict | None:
    """The record of a model trained before under ``key``, its weights loaded into ``model``; None if none is cached."""
    hit = cache.lookup("model", key, cache_root() / "models")
    if hit is None:
        return None
    from safetensors.torch import load_model

    load_model(model, str(hit / "model.safetensors"), device=str(device))
    model.eval()
    return {**json.loads((hit / "record.json").read_text()), "reused": str(hit)}


def _with_references(record: dict, refs: dict) -> dict:
    """``record`` with the floor's and the ceiling's accuracies, per-wording accuracies and valid-answer rates."""
    return {**record, "floor": refs.get("floor"), "ceiling": refs.get("ceiling"),
            "wordings": {**record.get("wordings", {}), **refs.get("wordings", {})},
            "valid_answer_rate": {**record.get("valid_answer_rate", {}), **refs.get("valid", {})}}


def _checkpointing(config: RunConfig, output_dir, key: dict, ranks: int, writer: bool):
    if not (config.checkpoint_every or config.resume):
        return None
    from .checkpoint import Checkpointing

    return Checkpointing(checkpoint_dir(output_dir), config.checkpoint_every, config.resume,
                         {**key, "world_size": ranks}, writer)


def _train(config: RunConfig, inputs: _Inputs, budget: Budget, device, dist, checkpoint,
           progress) -> tuple[list, float]:
    """Train every stage of the model; returns the stages' logs and the training seconds."""
    t = time.perf_counter()
    try:
        data = (inputs.source.batches(inputs.world, budget) if dist is None
                else inputs.source.batches(inputs.world, budget, rank=dist.rank, ranks=dist.world_size))
        kw = {} if checkpoint is None and dist is None else {"checkpoint": checkpoint, "dist": dist}
        logs = train_stages(inputs.model, inputs.model.stages(), data, budget, device=device,
                            precision=config.precision, progress=progress, **kw)
    except NonFiniteLoss as e:
        raise _non_finite_advice(config, e) from None
    return logs, time.perf_counter() - t


def _evaluate(config: RunConfig, inputs: _Inputs, budget: Budget, device, progress) -> dict:
    """The trained model's accuracies, per wording, valid-answer rates and diagnostics, and the references."""
    model, world, source = inputs.model, inputs.world, inputs.source
    t = time.perf_counter()
    metrics, model_wordings, model_valid = source.evaluate(model, world, budget, config.precision)
    diagnostics = model.diagnostics(source.diagnostic_batch(model, world, min(64, budget.eval_batch)))
    t_eval = time.perf_counter()
    # the floor and ceiling are the world's (the oracle reads its scene text): none for another data source
    refs = (_references(inputs.backbones, world, budget, device, config.precision, progress)
            if config.references and source.is_world else {})
    seconds = {"evaluate": t_eval - t, "references": time.perf_counter() - t_eval}
    return {"seconds": seconds, "metrics": metrics,
            "wordings": {**({"model": model_wordings} if model_wordings else {}), **refs.get("wordings", {})},
            "valid": {"model": model_valid, **refs.get("valid", {})}, "refs": refs, "diagnostics": diagnostics}


def _record(config: RunConfig, budget: Budget, inputs: _Inputs, ev: dict, logs, train_s: float, key: dict, device,
            dist, checkpoint, wall_s: float) -> dict:
    metrics, refs = ev["metrics"], ev["refs"]
    n_samples = sum(l.samples for l in logs)
    record = {
        "config": config.resolved(),
        "budget": budget.as_dict(),
        "data": inputs.source.describe(),  # what it trained and was evaluated on
        "metrics": {k: v for k, v in metrics.items() if k != "chance"},
        "chance": metrics["chance"],
        "floor": refs.get("floor"),
        "ceiling": refs.get("ceiling"),
        # {model | floor | ceiling: {split | chance: {category: {wording: accuracy}}}}: the categories asked in
        # more than one wording, per wording (results.wording_table)
        "wordings": ev["wordings"],
        # {model | floor | ceiling: {split: {category: share}}}: argmax answers inside the question's answer set
        "valid_answer_rate": ev["valid"],
        "losses": {l.name: l.losses for l in logs},
        "stages": [{"name": l.name, "steps": l.steps, "seconds": l.seconds, "samples_per_s": l.samples_per_s,
                    "final_loss": l.losses[-1] if l.losses else None} for l in logs],
        "train_seconds": train_s,
        "samples_per_s": n_samples / train_s if train_s else None,
        "wall_seconds": wall_s,
        "params": inputs.model.param_counts(),
        "diagnostics": ev["diagnostics"],
        "environment": {"vlmlab": __version__, "torch": torch.__version__, "device": str(device),
                        "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "world_size": dist.world_size if dist is not None else 1},
        "backbones": _used_paths(inputs.backbones, backbones_needed(config.arch, config.knobs)),
        "backbone_ids": key["backbones"],  # which builds: entry name and content hash (cache.fingerprint)
        **inputs.source.record_extras(),  # a data source's one-word score and generated answers; none for the world
    }
    if dist is not None:
        record["distributed"] = dist.describe()
    if checkpoint is not None:
        record["checkpoints"] = {"every": checkpoint.every, "directory": str(checkpoint.directory),
                                 "resumed_from": checkpoint.resumed_from}
    return record


__all__ = ["RunConfig", "Experiment", "run", "write_json_atomic", "params_hash", "BUDGETS"]
