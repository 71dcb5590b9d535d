"""Computations and figures the teaching notebooks use to explain each architecture on real tensors.

One module per concern (import them directly, e.g. ``from vlmlab.explain import ovis``): ``attention`` (answer
attention to the image, attention masks), ``llava`` (the baseline's walk-through and the patch/word views the
other notebooks share), ``ovis`` (distributions over the visual embedding table), ``vwlmm`` (visual words and
their KL supervision), and one per further architecture. Every widget here has a static figure showing the
same information.
"""
