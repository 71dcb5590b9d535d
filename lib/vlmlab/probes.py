"""Linear probes: what does a ViT's patch token know about the object in its cell?

In the built-in world every object sits in one cell of a ``grid x grid`` layout and the ViT's patch is one cell
(patch 16 px = cell 16 px), so the patch token of an object's cell is *that object's* token. A linear probe reads
one attribute (color, shape, size, texture) from that token:

    x = block_l(ViT(image))[cell]            # [d]  raw output of block l at the object's cell
    p(attribute | x) = softmax(W z + b),     z = (x - mean) / std   (standardised on the training objects)

One probe per (encoder, block, attribute) is shared by all cells, so it must read the attribute the same way
wherever the object is: it is position-free. It is fitted on the objects of ``train`` scenes and scored on the
objects of held-out ``test`` scenes (or the compositional split). High held-out accuracy means the attribute is
linearly decodable from the token, which is what a linear connector (LLaVA's) can pass on to the LLM.

Fitting is multinomial logistic regression with an L2 penalty, full batch, by L-BFGS from zero weights in
float64: deterministic and a fraction of a second per probe. The penalty is picked per probe from a small grid
by accuracy on objects of ``val`` scenes (never on the test objects). ``method="ridge"`` is the closed-form
alternative (least squares on one-hot targets, argmax).

A ``pixels`` baseline reads the same cell's raw pixels: a feature is worth having only where it beats it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .world import Sample, World

ATTRIBUTES = ("color", "shape", "size", "texture")
POSITION = ("row", "col")  # where the object is: a token knows it only if the ViT's position embeddings survive
METHODS = ("logistic", "ridge")


@dataclass
class ObjectTable:
    """The objects of a list of scenes, one row each: which sample, which cell, and every attribute's value."""

    sample: np.ndarray  # [n_obj] index into the sample list
    row: np.ndarray  # [n_obj]
    col: np.ndarray  # [n_obj]
    labels: dict[str, np.ndarray]  # attribute -> [n_obj] class index into classes[attribute]
    classes: dict[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.sample)


def _check_targets(attributes) -> None:
    bad = [a for a in attributes if a not in ATTRIBUTES + POSITION]
    if bad:
        raise ValueError(f"attributes={bad} unknown; allowed: {ATTRIBUTES + POSITION}")


def object_table(samples: list[Sample], attributes=ATTRIBUTES) -> ObjectTable:
    """One row per object; ``attributes`` may include the object's cell, ``"row"`` and ``"col"`` (classes r0.., c0..)."""
    _check_targets(attributes)
    world = samples[0].world
    classes = {a: tuple(f"{a[0]}{i}" for i in range(world.grid)) if a in POSITION else tuple(getattr(world, a + "s"))
               for a in attributes}  # world.colors, world.shapes, ...; r0..r3, c0..c3
    rows = [(i, o) for i, s in enumerate(samples) for o in s.scene]
    value = lambda o, a: getattr(o, a) if a in POSITION else classes[a].index(getattr(o, a))  # noqa: E731
    return ObjectTable(
        sample=np.array([i for i, _ in rows], dtype=np.int64),
        row=np.array([o.row for _, o in rows], dtype=np.int64),
        col=np.array([o.col for _, o in rows], dtype=np.int64),
        labels={a: np.array([value(o, a) for _, o in rows], dtype=np.int64) for a in attributes},
        classes=classes,
    )


def _cell_pooling(world_grid: int, enc_grid: int, objs: ObjectTable) -> torch.Tensor:
    """[n_obj, enc_grid**2] weights that average the patches covering each object's cell (one patch per cell
    in the built-in world, where the ViT's grid equals the world's grid)."""
    if enc_grid % world_grid:
        raise ValueError(f"the encoder's patch grid ({enc_grid}) must be a multiple of the world's grid ({world_grid})")
    k = enc_grid // world_grid  # patches per cell side
    w = torch.zeros(len(objs), enc_grid, enc_grid)
    for j, (r, c) in enumerate(zip(objs.row, objs.col)):
        w[j, r * k:(r + 1) * k, c * k:(c + 1) * k] = 1.0 / (k * k)
    return w.flatten(1)


@torch.no_grad()
def cell_features(encoder, samples: list[Sample], blocks, objs: ObjectTable | None = None, batch: int = 256,
                  device=None) -> dict[int, torch.Tensor]:
    """The token of each object's cell at each requested block: block -> [n_obj, d] (float64, CPU).

    ``encoder`` is a :class:`~vlmlab.backbones.VisionEncoder`; ``encoder="pixels"`` gives the cell's raw pixels
    instead (block key -1), the baseline every feature has to beat."""
    objs = object_table(samples) if objs is None else objs
    world = samples[0].world
    images = World.images(samples)  # [S, 3, H, W] in [0, 1]
    if isinstance(encoder, str):
        if encoder != "pixels":
            raise ValueError(f"encoder={encoder!r}; pass a VisionEncoder or 'pixels'")
        c = world.cell
        cells = images.unfold(2, c, c).unfold(3, c, c)  # [S, 3, g, g, c, c]
        x = cells[objs.sample, :, objs.row, objs.col]  # [n_obj, 3, c, c]
        return {-1: x.flatten(1).double()}
    blocks = [int(b) % encoder.depth for b in blocks]
    device = device or next(encoder.parameters()).device
    pool = _cell_pooling(world.grid, encoder.grid, objs).to(device)  # [n_obj, N]
    per_block = {b: [] for b in blocks}
    for s0 in range(0, len(samples), batch):
        outs = encoder(images[s0:s0 + batch].to(device), layers=blocks)  # each [b, N, d]
        sel = (objs.sample >= s0) & (objs.sample < s0 + batch)
        idx = torch.from_numpy(objs.sample[sel] - s0).to(device)
        for b, out in zip(blocks, outs):
            tokens = out.float()[idx]  # [n_sel, N, d]: each object's image
            per_block[b].append(torch.einsum("jn,jnd->jd", pool[torch.from_numpy(np.flatnonzero(sel)).to(device)],
                                             tokens))  # [n_sel, d]
    return {b: torch.cat(v).double().cpu() for b, v in per_block.items()}


@dataclass
class Probe:
    """A fitted linear probe: standardisation, then ``W z + b``; ``predict`` returns class indices."""

    classes: tuple[str, ...]
    mean: torch.Tensor  # [d]
    std: torch.Tensor  # [d]
    weight: torch.Tensor  # [d, n_classes]
    bias: torch.Tensor  # [n_classes]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias  # [n, n_classes]

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return self.logits(x).argmax(dim=1).numpy()


L2_GRID = (1e-1, 1e-2, 1e-3)  # penalties tried per probe, strongest first (each fit warm-starts the next)


def fit_probe(x: torch.Tensor, y: np.ndarray, classes: tuple[str, ...], method: str = "logistic",
              l2: float = 1e-3, steps: int = 100, init: Probe | None = None) -> Probe:
    """Fit one probe on features x [n, d] and class indices y [n] (from zero weights, or warm from ``init``)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed values: {METHODS}")
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std  # [n, d]
    n, d = z.shape
    k = len(classes)
    target = torch.from_numpy(y)
    if method == "ridge":  # closed form on one-hot targets centred by their mean
        onehot = F.one_hot(target, k).double()  # [n, k]
        prior = onehot.mean(0)
        w = torch.linalg.solve(z.T @ z + l2 * n * torch.eye(d, dtype=z.dtype), z.T @ (onehot - prior))
        return Probe(classes, mean, std, w, prior)
    w = torch.zeros(d, k, dtype=torch.float64) if init is None else init.weight.clone()
    b = torch.zeros(k, dtype=torch.float64) if init is None else init.bias.clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(classes, mean, std, w.detach(), b.detach())


def fit_probe_cv(x, y, x_val, y_val, classes, method="logistic", l2_grid=L2_GRID) -> tuple[Probe, float]:
    """Fit one probe per penalty in ``l2_grid`` (warm-started, strongest first); keep the best on validation."""
    best, best_acc, best_l2, prev = None, -1.0, None, None
    for l2 in l2_grid:
        p = fit_probe(x, y, classes, method, l2, init=prev)
        acc = float((p.predict(x_val) == y_val).mean())
        if acc > best_acc:
            best, best_acc, best_l2 = p, acc, l2
        prev = p
    return best, best_l2


def default_scenes(budget) -> tuple[int, int]:
    """(train scenes, test scenes) for the probes: the budget's ``probe_scenes`` and half as many (about 2.5
    objects each)."""
    return budget.probe_scenes, budget.probe_scenes // 2


def fit_probes(encoders: dict, world: World, blocks=None, *, train_scenes: int = 2000, test_scenes: int = 1000,
               attributes=ATTRIBUTES, splits=("test",), method: str = "logistic", l2_grid=L2_GRID,
               pixels: bool = True) -> tuple[pd.DataFrame, dict]:
    """Fit a probe per (encoder, block, attribute); score it on held-out scenes. ``attributes`` may also name
    the object's cell (:data:`POSITION`: ``"row"``, ``"col"``).

    encoders: name -> VisionEncoder (e.g. ``{"CL": bb.cl, "MIM": bb.mim}``). blocks: 0-based block indices
    (negative counts from the end; None = every block). Probes train on the objects of ``train_scenes`` train
    scenes, pick their penalty on ``test_scenes // 2`` val scenes and are scored on ``test_scenes`` scenes of
    each split in ``splits`` (e.g. ``("test", "compositional")``: the same probes, other objects).
    Returns the tidy table (one row per encoder, block, attribute and split: held-out accuracy and chance = the
    majority class's share of the scored objects, both in %) and the probes keyed by (encoder, block, attribute).
    """
    _check_targets(attributes)
    bad = [s for s in splits if s not in ("val", "test", "compositional")]
    if bad:
        raise ValueError(f"splits={bad}; allowed: ('val', 'test', 'compositional')")
    scenes = {"train": world.samples("train", 0, train_scenes), "val": world.samples("val", 0, max(1, test_scenes // 2))}
    for sp in splits:
        scenes[sp] = scenes["val"] if sp == "val" else world.samples(sp, 0, test_scenes)
    objs = {sp: object_table(ss, attributes) for sp, ss in scenes.items()}
    sources = dict(encoders)
    if pixels:
        sources["pixels"] = "pixels"
    rows, probes = [], {}
    for name, enc in sources.items():
        is_px = isinstance(enc, str)
        bl = [-1] if is_px else list(range(enc.depth)) if blocks is None else list(blocks)
        feats = {sp: cell_features(enc, ss, bl, objs[sp]) for sp, ss in scenes.items()}
        tr, va = objs["train"], objs["val"]
        for blk in feats["train"]:
            for a in attributes:
                p, l2 = fit_probe_cv(feats["train"][blk], tr.labels[a], feats["val"][blk], va.labels[a],
                                     tr.classes[a], method, l2_grid)
                probes[(name, blk, a)] = p
                train_acc = 100 * float((p.predict(feats["train"][blk]) == tr.labels[a]).mean())
                for sp in splits:
                    y = objs[sp].labels[a]
                    rows.append({"encoder": name, "block": None if is_px else blk,
                                 "depth": None if is_px else enc.depth, "attribute": a, "split": sp,
                                 "accuracy": 100 * float((p.predict(feats[sp][blk]) == y).mean()),
                                 "chance": 100 * float(np.bincount(y, minlength=len(p.classes)).max() / len(y)),
                                 "train accuracy": train_acc, "l2": l2, "n_train": len(tr), "n_test": len(y)})
    df = pd.DataFrame(rows)
    df["block"] = df["block"].astype("Int64")
    df["depth"] = df["depth"].astype("Int64")
    return df, probes


def probe_table(encoders: dict, world: World, blocks=None, **kw) -> pd.DataFrame:
    """Held-out probe accuracy per encoder, block and attribute (the tidy table of :func:`fit_probes`)."""
    return fit_probes(encoders, world, blocks, **kw)[0]


def best_blocks(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each encoder at its best probed block per attribute (indexed by encoder and attribute), and the raw-pixel
    rows (indexed by attribute): what a notebook compares once the probes are fitted."""
    feat = table[table["encoder"] != "pixels"]
    best = feat.loc[feat.groupby(["encoder", "attribute"])["accuracy"].idxmax()].set_index(["encoder", "attribute"])
    return best, table[table["encoder"] == "pixels"].set_index("attribute")


def probe_predictions(encoders: dict, probes: dict, samples: list[Sample], block: int,
                      attributes=ATTRIBUTES) -> pd.DataFrame:
    """What each encoder's probes read from every object of the given scenes at one block: one row per
    (scene, object, attribute, encoder) with the truth, the prediction and the probe's probability for it, and
    whether the object's (shape, color) pair is one the train split never shows (``held_out``)."""
    objs = object_table(samples, attributes)
    hold = set(samples[0].world.holdout)
    held = [(o.shape, o.color) in hold for s in samples for o in s.scene]  # object_table's order
    rows = []
    for name, enc in encoders.items():
        blk = block if isinstance(enc, str) else int(block) % enc.depth
        x = cell_features(enc, samples, [blk], objs)[-1 if isinstance(enc, str) else blk]
        for a in attributes:
            p = probes[(name, -1 if isinstance(enc, str) else blk, a)]
            prob = p.logits(x).softmax(dim=1)  # [n_obj, n_classes]
            pred = prob.argmax(dim=1).numpy()
            for j in range(len(objs)):
                rows.append({"scene": int(objs.sample[j]), "row": int(objs.row[j]), "col": int(objs.col[j]),
                             "attribute": a, "encoder": name, "truth": objs.classes[a][objs.labels[a][j]],
                             "prediction": p.classes[pred[j]], "p": float(prob[j, pred[j]]),
                             "correct": bool(pred[j] == objs.labels[a][j]), "held_out": held[j]})
    return pd.DataFrame(rows)


__all__ = ["ATTRIBUTES", "POSITION", "METHODS", "ObjectTable", "object_table", "cell_features", "Probe", "fit_probe",
           "fit_probe_cv", "fit_probes", "probe_table", "best_blocks", "probe_predictions", "default_scenes"]
