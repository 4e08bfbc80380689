"""The collaborative-filtering models of the user-item interaction tables (rec_plugin/interactions.py):
NeuMF (He et al. 2017) scores a (user, item) pair, Mult-VAE (Liang et al. 2018) scores every item for
a user's bag of items. Both take the CTR models' inputs (training/models/ctr.py):

    NeuMF:    forward(dense [B, 0], ids int64 [B, 2] (user, item), [], []) -> logits [B]
    MultVAE:  forward(dense [B, 0], ids int64 [B, 0], [items int64 [N]], [offsets int64 [B + 1]])
              -> (logits float32 [B, n_items], kl float32 [B])

Mult-VAE trains on `multvae_loss` with a KL weight `beta_at(step)`; `TopKRecommender` is what serving
exports of it. Item id 0 is the vocabulary's unknown bucket: it is never recommended.
"""

# No `from __future__ import annotations`: TorchScript reads these modules' annotations as types.
import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import nn

from rec_plugin.schema import SchemaError
from training.models.config import GMF, MLP, NEUMF, ModelConfig
from training.models.parts import EmbeddingCollection, mlp, refuse_id
from training.ranking import PADDED

# A class with EmbeddingCollection's constructor (as in training/models/ctr.py).
Embeddings = Callable[..., nn.Module]


def _require_inputs(config: ModelConfig, ids: int, lists: int) -> None:
    """CF models read only their interaction schema's columns: refuse another schema in one line."""
    have = (len(config.dense_features), len(config.categorical_features), len(config.list_features))
    if have != (0, ids, lists):
        raise SchemaError(
            f"{config.name} takes no dense features, {ids} single-id and {lists} list features (the "
            f"interaction tables' schema, rec_plugin/interactions.py); the config has {have[0]} dense "
            f"{list(config.categorical_features)} single-id and {list(config.list_features)} list features"
        )


def _ncf_widths(config: ModelConfig) -> tuple[int, int]:
    """(GMF width, MLP width per side) that a row of the shared dim splits into for `ncf_mode`."""
    _require_inputs(config, 2, 0)
    dims = config.embedding_dims
    if len(dims) != 1:
        raise SchemaError(f"{config.name}: the user and item tables need one embedding dim, not {list(dims)}")
    dim = dims[0]
    if config.ncf_mode == GMF:
        return dim, 0
    if config.ncf_mode == MLP:
        return 0, dim
    if dim % 2:
        raise SchemaError(f"NeuMF splits each row in a GMF and an MLP half: the dim {dim} must be even")
    return dim // 2, dim // 2


class NeuMF(nn.Module):
    """Neural matrix factorization: a GMF tower (the elementwise product of the user's and the
    item's vectors) and an MLP tower (ReLU layers `ncf_mlp` over the two vectors side by side),
    fused by one linear output layer over both towers' last layers.

    Both towers read one row per id of the user and item tables (from `embeddings`, so TorchRec can
    shard them): in "neumf" mode its first half feeds GMF and its second half the MLP tower; in
    "gmf" or "mlp" mode (pretraining, see `fuse_pretrained`) the whole row feeds the one tower."""

    gmf_width: int
    mlp_width: int

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        self.gmf_width, self.mlp_width = _ncf_widths(config)
        self.embeddings = embeddings(config.tables, config.categorical_features, config.list_features)
        sizes = [2 * self.mlp_width, *config.ncf_mlp]
        self.tower = mlp(sizes) if self.mlp_width else nn.Sequential()
        self.output = nn.Linear(self.gmf_width + (sizes[-1] if self.mlp_width else 0), 1)

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        vectors = self.embeddings(ids, list_values, list_offsets)[0]
        user, item = vectors[:, 0], vectors[:, 1]
        split = self.gmf_width
        towers: list[torch.Tensor] = []
        if split > 0:
            towers.append(user[:, :split] * item[:, :split])
        if self.mlp_width > 0:
            towers.append(self.tower(torch.cat([user[:, split:], item[:, split:]], dim=1)))
        return self.output(torch.cat(towers, dim=1)).squeeze(1)

    @torch.jit.unused
    def score_grid(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """forward's logits of every (user, item) pair, [len(users), len(items)], for ranking: the
        towers' linear parts are split by side, so each user's and item's vectors go through them
        once instead of once per pair. The output layer over the GMF tower is a product of a user
        matrix and an item matrix; the MLP tower's first layer is a user term plus an item term,
        and only its later layers run per pair. Memory: [users, items, first layer's width]."""
        nothing_u, nothing_i = torch.zeros_like(users), torch.zeros_like(items)
        user = self.embeddings(torch.stack([users, nothing_u], 1), [], [])[0][:, 0]
        item = self.embeddings(torch.stack([nothing_i, items], 1), [], [])[0][:, 1]
        split = self.gmf_width
        weight = self.output.weight[0]
        logits = self.output.bias.expand(len(users), len(items))
        if split > 0:
            logits = logits + (user[:, :split] * weight[:split]) @ item[:, :split].T
        if self.mlp_width > 0 and len(self.tower) == 0:  # no layers: the output reads both sides
            user_side, item_side = weight[split:].split(self.mlp_width)
            logits = logits + (user[:, split:] @ user_side)[:, None] + (item[:, split:] @ item_side)
        elif self.mlp_width > 0:
            first = self.tower[0]
            user_term = user[:, split:] @ first.weight[:, : self.mlp_width].T + first.bias
            item_term = item[:, split:] @ first.weight[:, self.mlp_width :].T
            hidden = torch.relu(user_term[:, None, :] + item_term[None, :, :])
            for layer in self.tower[2:]:
                hidden = layer(hidden)
            logits = logits + hidden @ weight[split:]
        return logits


def fuse_pretrained(
    gmf_state: Mapping[str, torch.Tensor],
    mlp_state: Mapping[str, torch.Tensor],
    config: ModelConfig,
    alpha: float = 0.5,
) -> dict[str, torch.Tensor]:
    """NeuMF's initial weights (He et al. 2017, 3.4.1) from a GMF and an MLP pretrained alone, with
    half of `config`'s embedding dim: each table row is [GMF row | MLP row], the MLP tower is the MLP's,
    and the output layer weighs the towers [alpha h_gmf, (1 - alpha) h_mlp] (the biases likewise), so
    the fused logit is alpha * GMF's logit + (1 - alpha) * MLP's. States are the default backend's."""
    fused = NeuMF(dataclasses.replace(config, ncf_mode=NEUMF)).state_dict()
    for key, value in fused.items():
        if key.startswith("embeddings.") and key.endswith(".weight"):
            fused[key] = torch.cat([gmf_state[key], mlp_state[key]], dim=1)
        elif key.startswith("tower."):
            fused[key] = mlp_state[key]
        if fused[key].shape != value.shape:
            raise SchemaError(
                f"{key}: the pretrained weights give shape {list(fused[key].shape)} but NeuMF's config "
                f"needs {list(value.shape)}; pretrain GMF and MLP at half NeuMF's embedding dim"
            )
    fused["output.weight"] = torch.cat(
        [alpha * gmf_state["output.weight"], (1 - alpha) * mlp_state["output.weight"]], dim=1
    )
    fused["output.bias"] = alpha * gmf_state["output.bias"] + (1 - alpha) * mlp_state["output.bias"]
    return fused


def _tanh_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through `sizes` with tanh between them (Mult-VAE's activation), none after."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _rows(offsets: torch.Tensor) -> torch.Tensor:
    """The row of each value of a jagged batch: [N]."""
    rows = torch.arange(offsets.shape[0] - 1, device=offsets.device)
    return torch.repeat_interleave(rows, offsets[1:] - offsets[:-1])


class MultVAE(nn.Module):
    """Variational autoencoder of a user's bag of items with a multinomial likelihood.

    Encoder: the L2-normalised bag (each of a row's n items weighs 1 / sqrt(n); the bag's items are
    distinct) times the first layer's weight, an embedding-bag lookup in `encoder_table` (sparse:
    the sparse optimizer updates it), with each item dropped with probability `vae_dropout` in
    training (the kept ones scaled by 1 / (1 - p), as dropout does); then tanh, the further
    `vae_hidden` tanh layers, and a linear layer to the Gaussian latent's mu and log-variance.
    Decoder: the latent (a reparameterised sample in training, mu in eval) through the mirrored
    hidden layers to one logit per item. The model keeps its own table: it needs the default
    `embeddings` (no TorchRec sharding)."""

    latent: int
    dropout: float
    feature: str
    table_name: str
    n_items: int

    def __init__(self, config: ModelConfig, embeddings: Embeddings = EmbeddingCollection) -> None:
        super().__init__()
        _require_inputs(config, 0, 1)
        if embeddings is not EmbeddingCollection:
            raise SchemaError("multvae keeps its own encoder table: train it with a data-parallel backend")
        if not config.vae_hidden or not 0.0 <= config.vae_dropout < 1.0:
            raise SchemaError(
                f"multvae needs one hidden layer or more and a dropout in [0, 1), not "
                f"{list(config.vae_hidden)} and {config.vae_dropout}"
            )
        self.feature = config.list_features[0]
        table = config.table_of(self.feature)
        self.table_name, self.n_items = table.name, table.num_embeddings
        self.latent, self.dropout = config.vae_latent, config.vae_dropout
        hidden = list(config.vae_hidden)
        self.encoder_table = nn.Embedding(self.n_items, hidden[0], sparse=True)
        self.encoder_bias = nn.Parameter(torch.zeros(hidden[0]))
        self.encoder = _tanh_mlp([*hidden, 2 * self.latent])
        self.decoder = _tanh_mlp([self.latent, *hidden[::-1], self.n_items])
        self._initialise()

    def _initialise(self) -> None:
        """Xavier weights and N(0, 0.001) biases, as Liang et al.'s code."""
        nn.init.xavier_uniform_(self.encoder_table.weight)
        nn.init.normal_(self.encoder_bias, std=0.001)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=0.001)

    def start_from_popularity(self, item_counts: torch.Tensor) -> None:
        """Sets the decoder's output bias to the items' log frequencies (`item_counts` [n_items], one
        added to each): the untrained model ranks every user's items by popularity, and training
        learns what a user's bag adds to it rather than the popularity too."""
        counts = item_counts.to(torch.float64) + 1.0
        with torch.no_grad():
            self.decoder[-1].bias.copy_((counts / counts.sum()).log())

    def forward(
        self,
        dense: torch.Tensor,
        ids: torch.Tensor,
        list_values: list[torch.Tensor],
        list_offsets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(item logits [B, n_items], KL divergence of each row's posterior from N(0, I) [B])."""
        mu, logvar = self._encode(list_values[0], list_offsets[0], self.training)
        latent = mu
        if self.training:
            latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(dim=1)
        return self.decoder(latent), kl

    def item_scores(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Item logits [B, n_items] from mu without input dropout, whatever the mode: how it ranks."""
        mu, _ = self._encode(values, offsets, False)
        return self.decoder(mu)

    def _encode(
        self, values: torch.Tensor, offsets: torch.Tensor, drop: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if values.numel() > 0:
            low, high = torch.aminmax(values)
            if bool(high >= self.n_items) or bool(low < 0):
                bad = int(high) if bool(high >= self.n_items) else int(low)
                refuse_id(self.feature, self.table_name, bad, self.n_items)
        # Id 0 (a rare or unseen item at serving) is no item: training bags hold none, so it weighs 0
        # and counts in no row's length (its encoder row never learned).
        lengths = offsets[1:] - offsets[:-1]
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=values.device), lengths)
        known = (values > 0).to(torch.float32)
        counts = torch.zeros(lengths.shape[0], device=values.device).index_add_(0, rows, known)
        weights = counts.clamp(min=1).rsqrt()[rows] * known
        if drop and self.dropout > 0.0:
            kept = torch.rand(values.shape, device=values.device) >= self.dropout
            weights = weights * kept.to(torch.float32) / (1.0 - self.dropout)
        bag = nn.functional.embedding_bag(
            values,
            self.encoder_table.weight,
            offsets,
            mode="sum",
            sparse=True,
            per_sample_weights=weights,
            include_last_offset=True,
        )
        hidden = self.encoder(torch.tanh(bag + self.encoder_bias))
        return hidden[:, : self.latent], hidden[:, self.latent :]


def multvae_loss(
    outputs: tuple[torch.Tensor, torch.Tensor],
    list_values: list[torch.Tensor],
    list_offsets: list[torch.Tensor],
    weight: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Weighted mean over rows (padding rows weigh 0) of the negative ELBO: minus the sum of the
    row's items' log-softmax probabilities plus beta times the row's KL."""
    logits, kl = outputs
    values, offsets = list_values[0], list_offsets[0]
    rows = _rows(offsets)
    picked = torch.log_softmax(logits, dim=1)[rows, values]
    nll = torch.zeros_like(kl).index_add(0, rows, -picked)
    return ((nll + beta * kl) * weight).sum() / weight.sum().clamp(min=1.0)


def beta_at(step: int, cap: float, anneal_steps: int) -> float:
    """The KL weight at `step`: step / anneal_steps, capped at `cap` (Liang et al.'s schedule)."""
    return cap if anneal_steps <= 0 else min(cap, step / anneal_steps)


def exclude_seen(scores: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`scores` [B, n_items] with each row's input items and the unknown id 0 at -inf: never ranked."""
    scores = scores.clone()
    scores[_rows(offsets), values] = float("-inf")
    scores[:, 0] = float("-inf")
    return scores


def score_all_items(model: MultVAE, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Every item's score [B, n_items] for evaluation, the rows' input items and id 0 at -inf."""
    with torch.no_grad():
        return exclude_seen(model.item_scores(values, offsets), values, offsets)


class TopKRecommender(nn.Module):
    """The k best items [B, k] (ids, scores) for bags of items [N] with offsets [B + 1], best first,
    as the model in eval mode ranks them, the bag's items and id 0 left out. A row with fewer than k
    other items pads with id -1 at score -inf."""

    k: int
    padded: int

    def __init__(self, model: MultVAE, k: int) -> None:
        super().__init__()
        if not 1 <= k <= model.n_items - 1:
            raise ValueError(f"k must be in 1..{model.n_items - 1} (the items but id 0), not {k}")
        self.model = model
        self.k = k
        self.padded = PADDED  # an attribute: TorchScript takes no global value

    def forward(
        self, item_values: torch.Tensor, item_offsets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = exclude_seen(self.model.item_scores(item_values, item_offsets), item_values, item_offsets)
        best, ids = torch.topk(scores, self.k, dim=1)
        return torch.where(best == float("-inf"), torch.full_like(ids, self.padded), ids), best


NCF, MULTVAE = "ncf", "multvae"
CF_MODELS: dict[str, type[nn.Module]] = {NCF: NeuMF, MULTVAE: MultVAE}
