"""LLM backbones (Hugging Face causal LMs) with a small registry, plus their tokenizers.

Real entries load pretrained weights from the Hugging Face cache; every entry also records its
architecture so parameter counts (and tiny random models) need no download. ``tiny-*`` entries are
random models sized for tests that use a real 32000-piece SentencePiece Llama tokenizer which
ships inside the ``mistral-common`` wheel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase

from vla.contract.prompt import check_prompt_style

PAD_TOKEN = "<PAD>"
PAD_TO_MULTIPLE_OF = 64  # Prismatic pads the embedding matrix (32001 -> 32064 for Llama-2)

_LLAMA2_7B = dict(
    model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
)
_QWEN25_05B = dict(
    model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_theta=1000000.0, tie_word_embeddings=True,
)
# initializer_range: HF's default 0.02 is sized for 4096-wide models (~1/sqrt(width)); at width 64 it
# leaves attention uniform for thousands of steps before the model uses the image (docs/benchmarks.md,
# "Closed loop (sim)"). 0.1 is close to 1/sqrt(64).
_TINY_LLAMA = dict(
    model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
    initializer_range=0.1,
)


ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


def flash_attention_2_available() -> bool:
    """The ``flash_attn`` package imports (at a version transformers supports) and CUDA is available."""
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def resolve_attn_implementation(requested: str) -> str:
    """The attention kernel to build the LLM with: ``auto`` -> ``flash_attention_2`` when
    :func:`flash_attention_2_available`, else ``sdpa``; an explicit ``flash_attention_2`` needs the package."""
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attn_implementation {requested!r}; choose one of {list(ATTN_IMPLEMENTATIONS)}")
    if requested == "auto":
        return "flash_attention_2" if flash_attention_2_available() else "sdpa"
    if requested == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ImportError("attn_implementation=flash_attention_2 needs the flash_attn package (pip install "
                              "flash-attn --no-build-isolation, CUDA only), which is not installed; use "
                              "attn_implementation=auto (flash_attention_2 when installed, else sdpa) or sdpa")
    return requested


@dataclass(frozen=True)
class LLMSpec:
    """Where a backbone's weights/tokenizer come from and what its architecture is."""

    hf_id: str | None  # None: random weights only (tiny models)
    architecture: dict
    tokenizer: str  # HF repo id, or "mistral-sp" for the offline SentencePiece Llama tokenizer
    space_token: str = "▁"  # the "empty" token OpenVLA appends to prompts at inference
    has_pad_token: bool = False  # False: a <PAD> token is added and the embeddings are padded
    # Prismatic's prompt builder for this backbone (vla.contract.prompt.PROMPT_STYLES): "pure" for
    # llama2-*-pure (OpenVLA-7B), "vicuna-v15" for vicuna-v15-* (openvla-7b-v01, siglip-224px+7b),
    # "llama2-chat" for llama2-*-chat. Training examples and inference prompts both use it.
    prompt_style: str = "pure"

    def __post_init__(self):
        check_prompt_style(self.prompt_style)

    def padded_vocab_size(self) -> int:
        """Embedding rows after Prismatic's padding (32000 + <PAD> -> 32064 for Llama-2)."""
        vocab = self.architecture["vocab_size"]
        return vocab if self.has_pad_token else _padded(vocab + 1)


def _padded(n_tokens: int) -> int:
    """Round an embedding size up to Prismatic's multiple of 64."""
    return (n_tokens + PAD_TO_MULTIPLE_OF - 1) // PAD_TO_MULTIPLE_OF * PAD_TO_MULTIPLE_OF


LLM_BACKBONES: dict[str, LLMSpec] = {
    "llama2-7b": LLMSpec("meta-llama/Llama-2-7b-hf", _LLAMA2_7B, "meta-llama/Llama-2-7b-hf"),
    "vicuna-v15-7b": LLMSpec("lmsys/vicuna-7b-v1.5", _LLAMA2_7B, "lmsys/vicuna-7b-v1.5", prompt_style="vicuna-v15"),
    "qwen25-0_5b": LLMSpec("Qwen/Qwen2.5-0.5B", _QWEN25_05B, "Qwen/Qwen2.5-0.5B", space_token="Ġ", has_pad_token=True),
    "tiny-llama": LLMSpec(None, _TINY_LLAMA, "mistral-sp"),
}


def register_llm_backbone(name: str, spec: LLMSpec) -> None:
    """Add an LLM backbone at run time (e.g. a shape-only variant with the offline tokenizer for benchmarks).

    An existing name is refused: replacing an entry would silently change what configs naming it build.
    """
    if not isinstance(spec, LLMSpec):
        raise TypeError(f"register_llm_backbone needs an LLMSpec, got {type(spec).__name__}")
    if name in LLM_BACKBONES:
        raise ValueError(f"LLM backbone {name!r} is already registered; pick another name")
    LLM_BACKBONES[name] = spec


def get_llm_spec(name: str) -> LLMSpec:
    if name not in LLM_BACKBONES:
        raise ValueError(f"Unknown LLM backbone {name!r}; registered: {sorted(LLM_BACKBONES)}")
    return LLM_BACKBONES[name]


def _offline_llama_tokenizer() -> PreTrainedTokenizerBase:
    """The SentencePiece tokenizer shipped in mistral-common, converted once and cached on disk."""
    cache = Path(os.environ.get("VLA_CACHE", Path.home() / ".cache" / "vla")) / "tokenizers" / "mistral-sp-v1"
    if not (cache / "tokenizer.json").exists():
        from transformers import LlamaTokenizer

        source = cache.parent / "mistral-sp-v1.src"
        source.mkdir(parents=True, exist_ok=True)
        model_file = source / "tokenizer.model"
        if not model_file.exists():
            model_file.write_bytes(_offline_sentencepiece_model().read_bytes())
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        LlamaTokenizer.from_pretrained(str(source)).save_pretrained(str(tmp))
        if not cache.exists():  # another process may have finished first
            os.replace(tmp, cache)
    return AutoTokenizer.from_pretrained(str(cache), trust_remote_code=False)


def _offline_sentencepiece_model() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def sentencepiece_model_file(spec: LLMSpec) -> Path | None:
    """The SentencePiece model behind ``spec``'s tokenizer where this machine has it (the offline one's package
    file; a hub tokenizer's ``tokenizer.model`` in the Hugging Face cache), else None. transformers 5 saves
    tokenizers as ``tokenizer.json`` only; exports for older readers ship this file too."""
    if spec.tokenizer == "mistral-sp":
        return _offline_sentencepiece_model()
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.tokenizer, "tokenizer.model")
    return Path(cached) if isinstance(cached, str) else None


def load_tokenizer(spec: LLMSpec, path: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer from ``path`` (an exported/checkpoint dir) or from the spec's source."""
    if path is not None:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if spec.tokenizer == "mistral-sp":
        return _offline_llama_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(spec.tokenizer, trust_remote_code=False)
    except Exception as err:
        raise RuntimeError(
            f"Could not load tokenizer {spec.tokenizer!r} from the Hugging Face hub/cache. Put it in HF_HOME "
            "(gated models need an accepted license + token) or use a tiny-* LLM backbone."
        ) from err


class LLMBackbone(nn.Module):
    """A causal LM (``self.llm``) and its tokenizer, with Prismatic's padding conventions.

    A ``<PAD>`` token is added when the tokenizer has none and the embedding matrix is padded to
    a multiple of 64. ``base_vocab_size`` (the tokenizer's vocabulary without added tokens) is
    what the action tokenizer maps onto, as in OpenVLA.
    """

    def __init__(self, name: str, pretrained: bool = False, tokenizer_path: str | None = None,
                 attn_implementation: str = "sdpa", llm_config: PreTrainedConfig | None = None):
        super().__init__()
        spec = get_llm_spec(name)
        self.name = name
        self.spec = spec
        with torch.device("cpu"):  # also when the weights are built on the meta device (checkpoint import)
            self.tokenizer = load_tokenizer(spec, tokenizer_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        self.base_vocab_size = int(self.tokenizer.vocab_size)
        self.llm = self._build(spec, pretrained, attn_implementation, llm_config)
        self.llm.config.pad_token_id = self.tokenizer.pad_token_id
        if self.llm.get_input_embeddings().num_embeddings < len(self.tokenizer):
            self.llm.resize_token_embeddings(len(self.tokenizer), pad_to_multiple_of=PAD_TO_MULTIPLE_OF, mean_resizing=False)
        self.embed_dim = self.llm.config.hidden_size
        bos = self.tokenizer.bos_token_id
        self.bos_token_id = int(bos if bos is not None else self.tokenizer.eos_token_id)
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.space_token_id = int(self.tokenizer.convert_tokens_to_ids(spec.space_token))

    @staticmethod
    def architecture_config(spec: LLMSpec, tokenizer_len: int | None = None):
        arch = dict(spec.architecture)
        if tokenizer_len is not None and arch["vocab_size"] < tokenizer_len:
            arch["vocab_size"] = _padded(tokenizer_len)
        return AutoConfig.for_model(**arch)

    def _build(self, spec: LLMSpec, pretrained: bool, attn_implementation: str,
               llm_config: PreTrainedConfig | None) -> nn.Module:
        """Pretrained weights, or random ones shaped by ``llm_config`` (a checkpoint's) or the registry."""
        attn_implementation = resolve_attn_implementation(attn_implementation)  # auto -> flash_attention_2 | sdpa
        if llm_config is not None:
            if pretrained:
                raise ValueError("Give an LLM architecture (llm_config) or pretrained weights, not both")
            return AutoModelForCausalLM.from_config(llm_config, attn_implementation=attn_implementation)
        if not pretrained:
            config = self.architecture_config(spec, len(self.tokenizer))
            return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
        if spec.hf_id is None:
            raise ValueError(f"LLM backbone {self.name!r} has no pretrained weights; set pretrained: false")
        try:
            return AutoModelForCausalLM.from_pretrained(spec.hf_id, torch_dtype=torch.float32, attn_implementation=attn_implementation)
        except Exception as err:
            raise RuntimeError(
                f"Could not load pretrained LLM weights {spec.hf_id!r} from the Hugging Face hub/cache. Put them in HF_HOME "
                "(gated models need an accepted license + token) or set `pretrained: false`."
            ) from err

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks (the last one is what the sandwich/last-layer stages train)."""
        return self.llm.model.layers

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)

    def forward(self, **kwargs):
        return self.llm(**kwargs)
