"""In-process vLLM backend (GPU): `vllm.LLM` with SamplingParams and guided JSON decoding.

vLLM is imported only when this backend generates, so the engine runs without it. Guided
decoding changed names across vLLM releases: `StructuredOutputsParams` (sampling param
`structured_outputs`) in recent ones, `GuidedDecodingParams` (`guided_decoding`) before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import Field

from ..errors import UserError
from .base import Backend, BackendConfig, GenerationRequest, GenerationResult

_ENGINES: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


class VllmConfig(BackendConfig):
    model: str = Field(description="Local model folder (or a name already in the local HF cache)")
    dtype: str = Field("auto")
    max_model_len: int | None = Field(None, ge=256)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = Field(False, description="Skip CUDA graphs (faster start, slower decode)")
    max_logprobs: int = Field(20, ge=0)


def guided_json_kwargs(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams keyword arguments that constrain output to `schema`, for old and new vLLM."""
    try:
        from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.10.2

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # older releases

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VllmBackend(Backend):
    name = "vllm"
    Config = VllmConfig
    description = "vLLM in-process on a GPU, with guided JSON decoding"

    def __init__(self, config: VllmConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.config: VllmConfig = config

    @property
    def model_id(self) -> str:
        return f"vllm:{self.config.model}"

    def _engine(self) -> Any:
        cfg = self.config
        key = (cfg.model, cfg.dtype, cfg.max_model_len, cfg.gpu_memory_utilization, cfg.tensor_parallel_size,
               cfg.enforce_eager)
        with _LOCK:
            if key not in _ENGINES:
                try:
                    from vllm import LLM
                except ImportError:
                    raise UserError("the vllm backend needs vLLM and a GPU",
                                    hint="pip install 'dialinsight-engine[vllm]'") from None
                _ENGINES[key] = LLM(
                    model=cfg.model, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                    gpu_memory_utilization=cfg.gpu_memory_utilization,
                    tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager,
                    max_logprobs=cfg.max_logprobs,
                )
            return _ENGINES[key]

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        from vllm import SamplingParams

        llm = self._engine()
        conversations = [
            ([{"role": "system", "content": r.system}] if r.system else []) + [{"role": "user", "content": r.prompt}]
            for r in requests
        ]
        params = []
        for r in requests:
            kwargs: dict[str, Any] = dict(max_tokens=r.max_tokens, temperature=r.temperature, seed=r.seed,
                                          stop=list(r.stop) or None)
            if r.top_logprobs > 0:
                kwargs["logprobs"] = r.top_logprobs
            if r.json_schema is not None:
                kwargs.update(guided_json_kwargs(r.json_schema))
            params.append(SamplingParams(**kwargs))
        t0 = time.perf_counter()
        outputs = llm.chat(conversations, params, use_tqdm=False)
        # one batched call: spread its wall time over the requests
        latency = (time.perf_counter() - t0) / max(len(requests), 1)
        results = []
        for out in outputs:
            completion = out.outputs[0]
            logprobs = None
            if completion.logprobs:
                logprobs = [
                    {(lp.decoded_token or str(tok)): float(lp.logprob) for tok, lp in step.items()}
                    for step in completion.logprobs
                ]
            results.append(GenerationResult(
                text=completion.text, prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids), finish_reason=completion.finish_reason,
                latency_s=latency, logprobs=logprobs,
            ))
        return results
