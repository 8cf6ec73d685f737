"""`dialengine study SPEC`: does each quality dimension predict fine-tuning outcome on the
user's own data? Equal-size subsets of the verify pool, picked by each metric (top, bottom)
and at random, are trained with the `[train]` trainer at the `[study]` budget and evaluated
with the `[eval]` evaluators; the report gives top-vs-bottom gains with paired bootstrap
intervals, each metric's rank correlation with per-row label correctness, and a suggested
weight vector as a spec patch. Every trained subset is cached under runs/<project>/study/."""
