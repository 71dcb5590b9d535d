"""Computations and figures the teaching notebooks use to explain each architecture on real tensors.

One module per concern (import them directly, e.g. ``from vlmlab.explain import ovis``): ``attention`` (answer
attention to the image, attention masks), ``llava`` (the baseline's walk-through and the patch/word views the
other notebooks share), ``ovis`` (distributions over the visual embedding table), ``vwlmm`` (visual words and
their KL supervision), and one per further architecture. Every widget here has a static figure showing the
same information.
"""


def steps_table(steps):
    """A walk-through's table: one row per ``(step, tensor, what)``, with the tensor's shape as ``[a, b, ...]``."""
    import pandas as pd

    return pd.DataFrame([{"step": n, "shape": "[" + ", ".join(str(d) for d in t.shape) + "]", "what": w}
                         for n, t, w in steps])
