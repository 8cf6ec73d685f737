"""Quality metrics.

Metric plugins (one `Metric` class each, registered by `builtins/quality.py`):
`prompt_complexity`, `input_complexity`, `data_richness`, `data_redundancy`, `label_quality`.

Support modules, not plugins: `base` (the `Metric` interface and `MetricContext`), `combine`
(runs a phase's metrics and decides per row), `phases` (the assess/verify stage glue), `blend`
(measures into one score), `textutil` (text helpers the built-ins share), `llm_scoring` (model
ratings for the complexity and judge options) and `embeddings` (semantic duplicates).
"""
