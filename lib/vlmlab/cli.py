"""``vlmlab`` command line: pretrain backbones, run one experiment (through the run notebook), sweeps, results,
the course, the world exported for other models and their answers scored."""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_NOTEBOOK = REPO / "notebooks" / "run.ipynb"


def _knob(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--knob expects NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return k, v
    # knobs are str, int, float or bool: "layers=0,2" means the string, not the tuple (0, 2)
    return k, value if isinstance(value, (str, int, float, bool)) else v


def cmd_pretrain(a):
    from .backbones import load_backbones
    from .budgets import get_budget
    from .device import pick_device

    bb = load_backbones(budget=get_budget(a.budget), device=pick_device(a.device), rebuild=a.rebuild)
    for kind, path in bb.paths.items():
        print(f"{kind}: {path}")


def print_summary(record: dict):
    from .data.report import describe, eval_table, is_world
    from .results import accuracy_table, wording_table

    if not is_world(record):
        print(f"\n{record['config']['arch']} exact match of its generated answers (%) per category, budget "
              f"{record['config']['budget']}, seed {record['config']['seed']}; {describe(record)}:")
        print(eval_table(record).to_string())
        print(f"\ntraining: {record['train_seconds']:.0f}s, {record['samples_per_s']:.0f} samples/s; "
              f"whole run {record['wall_seconds']:.0f}s; parameters {record['params']}")
        return
    for split in ("test", "compositional"):
        print(f"\n{record['config']['arch']} accuracy (%) on the {split} split, budget {record['config']['budget']}, "
              f"seed {record['config']['seed']}:")
        print(accuracy_table(record, split).to_string())
    if record.get("wordings"):
        print("\nper wording, test split (categories asked two ways; a mean can hide a gap between them):")
        print(wording_table(record, "test").to_string())
    print(f"\ntraining: {record['train_seconds']:.0f}s, {record['samples_per_s']:.0f} samples/s; "
          f"whole run {record['wall_seconds']:.0f}s; parameters {record['params']}")


def _under_torchrun() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _torchrun_argv(params: dict, out: Path) -> list[str]:
    """``vlmlab run`` with a run's parameters, in-process, without --nproc: what each of torchrun's processes runs."""
    argv = ["run", "--out", str(out)]
    for name, value in params.items():
        if name == "knobs":  # a string knob quoted, so that --knob reads it back as the string
            for k, v in value.items():
                argv += ["--knob", f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"]
        elif isinstance(value, bool):
            argv += [f"--{name.replace('_', '-')}"] if value else []
        else:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def _launch_torchrun(params: dict, out: Path, nproc: int) -> int:
    """Run ``params`` as ``nproc`` processes under torchrun on this machine; returns their exit status."""
    import subprocess

    from .archs import backbones_needed
    from .backbones import ensure_backbones
    from .budgets import get_budget
    from .device import pick_device

    # built once here, not by every process at once
    ensure_backbones(budget=get_budget(params["budget"]), device=pick_device(),
                     kinds=backbones_needed(params["arch"], params["knobs"]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "vlmlab.cli", *_torchrun_argv(params, out)]
    return subprocess.run(cmd).returncode


def cmd_run(a):
    from .runs import RunConfig, params_hash
    from .sweep import RunFailed

    if a.nproc < 1:
        raise ValueError(f"--nproc must be an int >= 1, got {a.nproc}")
    if a.nproc > 1 and _under_torchrun():
        raise ValueError("--nproc starts torchrun; under torchrun already, leave it out")
    knobs = dict(a.knob or [])
    params = {"arch": a.arch, "knobs": knobs, "seed": a.seed, "budget": a.budget, "precision": a.precision}
    if a.data != "world":  # absolute paths, which the notebook's kernel resolves alike; the world's runs keep their hash
        params["data"] = str(Path(a.data).resolve())
        params.update({k: str(Path(v).resolve()) for k, v in (("eval_data", a.eval_data),
                                                              ("image_root", a.image_root)) if v})
    elif a.eval_data or a.image_root:
        params.update({k: v for k, v in (("eval_data", a.eval_data), ("image_root", a.image_root)) if v})
    if a.max_new_tokens is not None:  # only when given: the runs without it keep their hash
        params["max_new_tokens"] = a.max_new_tokens
    out = Path(a.out) if a.out else REPO / "papermill_runs" / "cli" / f"{a.arch}-{params_hash(params)}"
    # how a run goes, not what it computes: left out of the hash, so that --resume finds the killed run's folder
    how = {k: v for k, v in (("checkpoint_every", a.checkpoint_every), ("resume", a.resume)) if v}
    config = RunConfig.from_params(**params, **how, output_dir=out)  # every parameter, before any backbone loads
    params.update(how)
    if a.nproc > 1:
        rc = _launch_torchrun(params, out, a.nproc)
        if rc:
            raise RunFailed(f"the {a.nproc} processes of torchrun ended with exit status {rc}")
        return
    if a.in_process or _under_torchrun():  # one notebook per process would write one output twice
        from .runs import run

        rec = run(config, output_dir=out).record
        if rec is None:  # a rank other than 0: it trained its share; rank 0 prints
            return
    else:
        from .archs import backbones_needed
        from .backbones import ensure_backbones
        from .budgets import get_budget
        from .device import pick_device
        from .sweep import execute_notebook

        # build missing backbones here, where their progress bars reach the terminal, not silently inside the
        # notebook's kernel (the first run spends most of its time there); the notebook loads them. Only those
        # the arch reads: LLaVA does not wait for the MIM encoder (`vlmlab pretrain` builds all three)
        ensure_backbones(budget=get_budget(a.budget), device=pick_device(), kinds=backbones_needed(a.arch, knobs))
        rec = execute_notebook(RUN_NOTEBOOK, out, params, progress=True)
        print(f"executed notebook: {out / 'run.ipynb'}")
    print(f"record: {out / 'record.json'}")
    print_summary(rec)


def build_parser() -> argparse.ArgumentParser:
    """The ``vlmlab`` command line, every subcommand (the docs' commands are checked against it)."""
    p = argparse.ArgumentParser(prog="vlmlab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("pretrain", help="build (or verify) the cached pretrained backbones for a budget")
    s.add_argument("--budget", default="default")
    s.add_argument("--device", default="auto")
    s.add_argument("--rebuild", action="store_true",
                   help="build all three anew on this machine into data/cache/, even where cached or shipped "
                        "(data/backbones/)")
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("run", help="train + evaluate one architecture via the run notebook; print the table")
    s.add_argument("--arch", default="llava")
    s.add_argument("--budget", default="default")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--precision", default="fp32")
    s.add_argument("--knob", type=_knob, action="append", metavar="NAME=VALUE", help="architecture knob (repeat)")
    s.add_argument("--data", default="world",
                   help="training data: world (default), a LLaVA-format .json file or a datasets save_to_disk folder")
    s.add_argument("--eval-data", help="evaluation data, same formats (default: a seeded held-out 10%% of --data)")
    s.add_argument("--image-root", help="folder the LLaVA file's image paths are relative to (default: its folder)")
    s.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="longest generated answer on --data other than world, scored by normalized exact match "
                        "(default 16; the world scores one word)")
    s.add_argument("--out", help="run directory (default: papermill_runs/cli/<arch>-<hash>)")
    s.add_argument("--in-process", action="store_true", help="skip papermill; run in this process")
    s.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="save the training state into OUT/checkpoints every N optimizer steps (default 0: never)")
    s.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in OUT/checkpoints (from the start when there is none)")
    s.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes (DDP) under torchrun, in-process; one per GPU on CUDA, gloo on CPU")
    s.set_defaults(fn=cmd_run)

    try:
        from .sweep import add_cli as add_sweep_cli
        add_sweep_cli(sub)
    except ImportError:
        pass

    from .course import add_cli as add_course_cli
    add_course_cli(sub)

    from .export import add_cli as add_export_cli
    from .score import add_cli as add_score_cli
    add_export_cli(sub)
    add_score_cli(sub)
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    # the project's own errors end in one line, no traceback: bad input (2), a run that failed or a file that
    # could not be written or read (1), Ctrl-C (130)
    try:
        a.fn(a)
    except (ValueError, TypeError) as e:
        return _error(e, 2)
    except KeyboardInterrupt:
        print("vlmlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if isinstance(e, _run_errors()):
            return _error(e, 1)
        raise
    return 0


def _run_errors() -> tuple:
    """A failed run (in a notebook, or a non-finite loss in this process) and an unwritable or unreadable file.
    NonFiniteLoss is looked up only where vlmlab.train was imported, so that the CLI itself never imports torch."""
    from .sweep import RunFailed

    train = sys.modules.get("vlmlab.train")
    return (RunFailed, OSError) + ((train.NonFiniteLoss,) if train is not None else ())


def _error(e: BaseException, rc: int) -> int:
    text = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message held
    print(f"vlmlab: error: {text}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
