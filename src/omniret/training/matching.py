"""ReMatch's generative matching stage packed into ONE forward pass (arXiv 2511.19278 §3, Fig. 3;
docs/rematch.md).

Per training sample the MLLM answers "is the document related to the query? Yes/No" for every
(query view × document view): query views {raw q, Z_q}, document views {raw d⁺, Z_d⁺, raw d⁻, Z_d⁻}, where
``Z = MLP(E*)`` is the fused embedding projected back into the LM input space as soft token(s). The eight
standalone sequences ``prompt → query view → document view → answer`` share prefixes, so they form a prefix
tree of *segments*::

    P ─┬─ Q  ─┬─ D1 ── A      (each answer block A hangs below its document view)
       │      ├─ Z_D1 ── A
       │      ├─ D2 ── A
       │      └─ Z_D2 ── A
       └─ Z_Q ─┬─ ... (the same four document views)

All segments of a sample are laid out in one row; a token attends to every token of its segment's ancestors
and causally within its own segment (a unified 4-D mask), and each segment gets the position ids it has in
its standalone sequence (Qwen2-VL / 2.5-VL M-RoPE 3-D positions computed per segment, then shifted by the
length of its ancestors). Every answer therefore sees exactly its own prompt → query → document chain, and the
packed pass equals the eight standalone passes; the prompt and the query views are computed once instead of
four times, and the vision tower runs once per image.

The document views are repeated under each query view: in a standalone sequence the document attends to the
query before it, so its states differ per query view. d⁺ goes to slot 1 or 2 at random (seeded); since both
slots start at the same position and never see each other, the slot cannot change — let alone leak — the label.
``views="feat"`` is the paper's cheap Feat↔Feat variant (Z_q with Z_d⁺, Z_d⁻ only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from omniret.encoders.mllm import VISION_BLOCK, QwenVLEncoder, instruction_for
from omniret.errors import ConfigError, OmniretError
from omniret.losses.matching import matching_loss
from omniret.losses.terms import LOSS_TERMS, LossInputs, LossTerm
from omniret.types import ImagePart, Item

#: paraphrase of the paper's prompt (exact wording unpublished)
DEFAULT_PROMPT = "Determine whether the document is related to the query. Answer only Yes or No."
VIEWS = ("all", "feat")


@dataclass
class Segment:
    """One node of a sample's prefix tree: token ids (soft slots hold the pad id) and where they come from."""

    name: str
    ids: list[int]
    parent: int | None
    #: per token: row of the image-feature table it takes (-1: none)
    image_rows: list[int] = field(default_factory=list)
    #: per token: row of the soft-token table it takes (-1: none)
    soft_rows: list[int] = field(default_factory=list)
    #: image_grid_thw rows of the images in this segment, in order (for M-RoPE)
    grids: list[list[int]] = field(default_factory=list)


@dataclass
class PackedMatching:
    """A batch of packed samples (CPU tensors); built by :meth:`MatchingPacker.pack`."""

    input_ids: torch.Tensor  # (B, L)
    image_rows: torch.Tensor  # (B, L) long, -1 where not an image token
    soft_rows: torch.Tensor  # (B, L) long, -1 where not a soft token
    position_ids: torch.Tensor  # (3, B, L)
    allow: torch.Tensor  # (B, L, L) bool, True = may attend
    answer_at: torch.Tensor  # (N, 2) long (row, position) of the token that predicts each label
    labels: torch.Tensor  # (N,) long label token ids
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    pairs: list[tuple[int, str, str]]  # (sample, query view, document view) of each answer
    segments: list[list[Segment]]  # per sample, for inspection and the standalone reference
    slots: list[int]  # per sample: 1 or 2, the slot d⁺ went to
    lengths: list[int]  # per row: its tokens before padding


class MatchingProjector(nn.Module):
    """``Z = MLP(E*)``: Linear(H, H) – GELU – Linear(H, n·H), one fused embedding → ``n`` soft tokens [I]."""

    def __init__(self, hidden: int, soft_tokens: int = 1) -> None:
        super().__init__()
        if soft_tokens < 1:
            raise ConfigError(f"matching soft_tokens must be >= 1, got {soft_tokens}")
        self.hidden, self.soft_tokens = hidden, soft_tokens
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, soft_tokens * hidden))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``(N, H) -> (N, soft_tokens, H)``."""
        return self.net(emb).view(emb.shape[0], self.soft_tokens, self.hidden)


class MatchingPacker:
    """Builds the packed matching batch of a ReMatch-style :class:`~omniret.encoders.mllm.QwenVLEncoder`."""

    def __init__(self, encoder: Any, *, prompt: str = DEFAULT_PROMPT, views: str = "all", soft_tokens: int = 1,
                 labels: tuple[str, str] = ("Yes", "No")) -> None:
        if views not in VIEWS:
            raise ConfigError(f"matching views={views!r} is not valid; choose one of {', '.join(VIEWS)}")
        self.enc, self.views, self.soft_tokens = encoder, views, soft_tokens
        tok = encoder.tokenizer
        self.label_ids = tuple(tok(t, add_special_tokens=False)["input_ids"][0] for t in labels)
        if self.label_ids[0] == self.label_ids[1]:
            raise ConfigError(f"matching labels {labels} start with the same token; choose distinct words")
        sys = encoder.mllm_recipe.system_prompt
        self.prefix = self._ids(f"<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{prompt}\n")
        self.answer = self._ids("<|im_end|>\n<|im_start|>assistant\n")
        self.query_head, self.doc_head = self._ids("Query: "), self._ids("\nDocument: ")

    def _ids(self, text: str) -> list[int]:
        return list(self.enc.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------- views
    def _raw(self, item: Item, is_query: bool, head: list[int], image_row: int, counts: list[int]):
        """Token ids and per-token image rows of a raw view (images expanded like the encoder does)."""
        inst = instruction_for(item, is_query, self.enc.mllm_recipe)
        content = "".join(VISION_BLOCK if isinstance(p, ImagePart) else p for p in item.parts)
        ids = head + self.enc._token_ids(item, f"{inst}\n{content}" if inst else content, counts)
        rows, row = [], image_row
        for t in ids:
            rows.append(row if t == self.enc.image_token_id else -1)
            row += t == self.enc.image_token_id
        return ids, rows

    def _feat(self, head: list[int], soft_row: int) -> tuple[list[int], list[int]]:
        ids = head + [self.enc.pad_token_id] * self.soft_tokens
        return ids, [-1] * len(head) + list(range(soft_row, soft_row + self.soft_tokens))

    # ----------------------------------------------------------------- tree of one sample
    def sample_tree(self, items: list[Item], image_rows: list[int], grids: list[list[list[int]]],
                    counts: list[list[int]], soft_base: int, slot: int) -> tuple[list[Segment], list[tuple]]:
        """Segments of one sample ``items = [q, d⁺, d⁻]`` and its answers ``(segment index, qv, dv, label)``."""
        segs: list[Segment] = [Segment("P", self.prefix, None, [-1] * len(self.prefix), [-1] * len(self.prefix))]

        def add(name: str, parent: int, ids_rows: tuple[list[int], list[int]], soft: bool, grid) -> int:
            ids, rows = ids_rows
            image, soft_rows = ([-1] * len(ids), rows) if soft else (rows, [-1] * len(ids))
            segs.append(Segment(name, ids, parent, image, soft_rows, [] if soft else grid))
            return len(segs) - 1

        def view(i: int, feat: bool, head: list[int]):
            return self._feat(head, soft_base + i * self.soft_tokens) if feat else \
                self._raw(items[i], i == 0, head, image_rows[i], counts[i])

        q_views = [("Zq", True)] if self.views == "feat" else [("q", False), ("Zq", True)]
        docs = [(1, "d+"), (2, "d-")] if slot == 1 else [(2, "d-"), (1, "d+")]
        answers = []
        for qname, qfeat in q_views:
            qi = add(qname, 0, view(0, qfeat, self.query_head), qfeat, grids[0])
            for item_i, dname in docs:
                for feat in ([True] if self.views == "feat" else [False, True]):
                    dv = ("Z" if feat else "") + dname
                    di = add(f"{dv}|{qname}", qi, view(item_i, feat, self.doc_head), feat, grids[item_i])
                    ai = add(f"A|{qname}|{dv}", di, (self.answer, [-1] * len(self.answer)), False, [])
                    answers.append((ai, qname, dv, self.label_ids[0 if dname == "d+" else 1]))
        return segs, answers

    # ----------------------------------------------------------------- batch
    def pack(self, queries: list[Item], positives: list[Item], negatives: list[Item],
             generator: torch.Generator | None = None) -> PackedMatching:
        """Pack ``B`` samples (one hard negative each) into ``B`` rows; d⁺'s slot is drawn from ``generator``."""
        if not (len(queries) == len(positives) == len(negatives)) or not queries:
            raise OmniretError(f"matching needs equally many queries, positives and negatives (>0), got "
                               f"{len(queries)}, {len(positives)}, {len(negatives)}")
        flat = [it for trip in zip(queries, positives, negatives, strict=True) for it in trip]
        # the Feat-only variant has no raw view, so its images are never encoded
        pixel_values, grid = self.enc._image_features(flat) if self.views == "all" else (None, None)
        grid_rows = grid.tolist() if grid is not None else []
        tokens = [g[0] * g[1] * g[2] // self.enc.merge_size**2 for g in grid_rows]
        slots = torch.randint(1, 3, (len(queries),), generator=generator).tolist()
        trees, img, row = [], 0, 0
        for b in range(len(queries)):
            rows, grids, counts = [], [], []
            for it in flat[3 * b : 3 * b + 3]:
                n = len(it.images)
                rows.append(row)
                grids.append(grid_rows[img : img + n])
                counts.append(tokens[img : img + n])
                row += sum(tokens[img : img + n])
                img += n
            trees.append(self.sample_tree(flat[3 * b : 3 * b + 3], rows, grids, counts, 3 * b * self.soft_tokens,
                                          slots[b]))
        return self._collate(trees, pixel_values, grid, slots)

    def _collate(self, trees, pixel_values, grid, slots) -> PackedMatching:
        lengths = [sum(len(s.ids) for s in segs) for segs, _ in trees]
        b, length = len(trees), max(lengths)
        ids = torch.full((b, length), self.enc.pad_token_id, dtype=torch.long)
        image_rows = torch.full((b, length), -1, dtype=torch.long)
        soft_rows = torch.full((b, length), -1, dtype=torch.long)
        pos = torch.zeros((3, b, length), dtype=torch.long)
        allow = torch.eye(length, dtype=torch.bool).repeat(b, 1, 1)  # padding attends to itself only
        answer_at, labels, pairs = [], [], []
        for r, (segs, answers) in enumerate(trees):
            seg_of, starts = self._row_layout(segs)
            n = len(seg_of)
            ids[r, :n] = torch.tensor([t for s in segs for t in s.ids])
            image_rows[r, :n] = torch.tensor([t for s in segs for t in s.image_rows])
            soft_rows[r, :n] = torch.tensor([t for s in segs for t in s.soft_rows])
            pos[:, r, :n] = torch.cat(self.segment_positions(segs), dim=1)
            allow[r, :n, :n] = tree_mask(seg_of, [s.parent for s in segs])
            for ai, qv, dv, label in answers:
                answer_at.append((r, starts[ai] + len(segs[ai].ids) - 1))
                labels.append(label)
                pairs.append((r, qv, dv))
        return PackedMatching(ids, image_rows, soft_rows, pos, allow, torch.tensor(answer_at),
                              torch.tensor(labels), pixel_values, grid, pairs, [t[0] for t in trees], slots,
                              lengths)

    @staticmethod
    def _row_layout(segs: list[Segment]) -> tuple[torch.Tensor, list[int]]:
        seg_of = torch.cat([torch.full((len(s.ids),), i, dtype=torch.long) for i, s in enumerate(segs)])
        starts, at = [], 0
        for s in segs:
            starts.append(at)
            at += len(s.ids)
        return seg_of, starts

    def segment_positions(self, segs: list[Segment]) -> list[torch.Tensor]:
        """``(3, len)`` positions of every segment as in its standalone sequence: its own positions (from 0,
        M-RoPE per segment) shifted by the extent of its ancestors."""
        own = [self._own_positions(s) for s in segs]
        start: list[int] = []
        for s in segs:  # parents come before their children
            start.append(0 if s.parent is None else start[s.parent] + int(own[s.parent].max()) + 1)
        return [p + st for p, st in zip(own, start, strict=True)]

    def _own_positions(self, seg: Segment) -> torch.Tensor:
        n = len(seg.ids)
        if not seg.grids or self.enc.mllm_recipe.positions == "sequential":
            return torch.arange(n).expand(3, n)
        ids = torch.tensor([seg.ids])
        types = (ids == self.enc.image_token_id).to(torch.int32)
        pos, _ = self.enc.backbone.get_rope_index(input_ids=ids, mm_token_type_ids=types,
                                                  image_grid_thw=torch.tensor(seg.grids), attention_mask=None)
        return pos[:, 0].cpu()


def tree_mask(seg_of: torch.Tensor, parents: list[int | None]) -> torch.Tensor:
    """``(n, n)`` bool: token i may attend to token j iff j's segment is an ancestor of i's, or both are in the
    same segment and ``j <= i`` (causal)."""
    s = len(parents)
    anc = torch.zeros((s, s), dtype=torch.bool)
    for i in range(s):
        p = parents[i]
        while p is not None:
            anc[i, p] = True
            p = parents[p]
    same = seg_of[:, None] == seg_of[None, :]
    causal = torch.ones((len(seg_of), len(seg_of)), dtype=torch.bool).tril()
    return anc[seg_of][:, seg_of] | (same & causal)


def answer_logits(encoder: Any, projector: MatchingProjector, packed: PackedMatching,
                  embeddings: torch.Tensor) -> torch.Tensor:
    """One forward pass over the packed batch.

    Args:
        embeddings: ``(3B, H)`` fused embeddings ``E*`` in sample order ``[q_0, d⁺_0, d⁻_0, q_1, ...]``.

    Returns:
        ``(N, V)`` logits at every answer position (``N = 8B``, or ``2B`` for ``views="feat"``).
    """
    dev = encoder.device
    backbone = encoder.backbone
    ids = packed.input_ids.to(dev)
    x = backbone.get_input_embeddings()(ids)
    soft = projector(embeddings.to(x.dtype)).reshape(-1, x.shape[-1])  # (3B·n, H)
    x = _scatter_rows(x, packed.soft_rows.to(dev), soft)
    if packed.pixel_values is not None:
        out = backbone.get_image_features(packed.pixel_values.to(dev), packed.image_grid_thw.to(dev))
        x = _scatter_rows(x, packed.image_rows.to(dev), torch.cat(out.pooler_output).to(x.dtype))
    allow = packed.allow.to(dev)
    mask = torch.zeros(allow.shape, dtype=x.dtype, device=dev).masked_fill(~allow, torch.finfo(x.dtype).min)
    hidden = backbone.language_model(inputs_embeds=x, position_ids=packed.position_ids.to(dev),
                                     attention_mask=mask[:, None], use_cache=False).last_hidden_state
    at = packed.answer_at.to(dev)
    return encoder.model.lm_head(hidden[at[:, 0], at[:, 1]])


def _scatter_rows(x: torch.Tensor, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Replace ``x[b, l]`` by ``table[rows[b, l]]`` where ``rows >= 0``: ``(B, L, H)``."""
    hit = rows >= 0
    if not bool(hit.any()):
        return x
    return torch.where(hit[..., None], table[rows.clamp(min=0)], x)


def packed_matching_loss(encoder: Any, projector: MatchingProjector, packed: PackedMatching,
                         embeddings: torch.Tensor) -> torch.Tensor:
    """``L_qdm``: mean answer-token cross-entropy over every pair of every sample (one forward pass)."""
    return matching_loss(answer_logits(encoder, projector, packed, embeddings), packed.labels)


@LOSS_TERMS.register("match", "ReMatch's generative matching: 8 query/document views per triplet, one packed pass")
class MatchTerm(LossTerm):
    """``L_qdm`` as a loss term (config: ``{name: match, weight: 0.1, views: all, soft_tokens: 1}``).

    Each query's document views are its positive and its first hard negative (or, with
    ``loss.hard_negatives: 0``, the next query's positive). The projector is this term's own parameter,
    trained with the model and checkpointed with the loss state; d⁺'s slot draws come from ``seed`` and the
    number of calls so far (saved too), so a resumed run draws what an uninterrupted one would.
    """

    # its own packed pass reads the items, the weights and the embeddings, never the embedding passes'
    # activations, so GradCache caches the gradient it sends into the embeddings like any other term's
    needs = "items"

    def __init__(self, views: str = "all", soft_tokens: int = 1, prompt: str = DEFAULT_PROMPT, seed: int = 0) -> None:
        super().__init__()
        if views not in VIEWS:
            raise ConfigError(f"views={views!r} is not valid; choose one of {', '.join(VIEWS)}")
        if soft_tokens < 1:
            raise ConfigError(f"soft_tokens must be >= 1, got {soft_tokens}")
        self.views, self.soft_tokens, self.prompt, self.seed = views, soft_tokens, prompt, seed
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.projector: MatchingProjector | None = None
        self.packer: MatchingPacker | None = None

    def bind(self, encoder: Any) -> None:
        if not isinstance(encoder, QwenVLEncoder):
            raise ConfigError(f"loss term 'match' needs a Qwen2-VL / Qwen2.5-VL family (e.g. rematch); model family "
                              f"{encoder.family!r} has no language-model head to answer with")
        self.packer = MatchingPacker(encoder, prompt=self.prompt, views=self.views, soft_tokens=self.soft_tokens)
        self.projector = MatchingProjector(encoder.dim, self.soft_tokens).to(encoder.device)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if self.packer is None or self.projector is None or inputs.items is None:
            raise OmniretError("loss term 'match' runs only inside the trainer (bound to an encoder, given items)")
        queries, positives = inputs.items["queries"], inputs.items["positives"]
        if inputs.negatives is not None:
            h = inputs.negatives.shape[1]
            negatives, neg_emb = inputs.items["negatives"][::h], inputs.negatives[:, 0]
        elif len(queries) > 1:
            negatives, neg_emb = positives[1:] + positives[:1], inputs.positives.roll(-1, dims=0)
        else:
            raise OmniretError("loss term 'match' needs a hard negative (loss.hard_negatives >= 1) or batches of "
                               ">= 2 queries per process")
        emb = torch.stack([inputs.queries, inputs.positives, neg_emb], dim=1).flatten(0, 1)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.calls))
        self.calls += 1
        packed = self.packer.pack(queries, positives, negatives, gen)
        with self.packer.enc.autocast():
            return packed_matching_loss(self.packer.enc, self.projector, packed, emb)


__all__ = ["MatchTerm", "DEFAULT_PROMPT", "MatchingPacker", "MatchingProjector", "PackedMatching", "Segment", "answer_logits",
           "packed_matching_loss", "tree_mask"]
