"""NeuMF and Mult-VAE (training/models/cf.py): signatures, TorchScript, pretrained fusion, the VAE's
loss and top-k, and that both learn a planted user-item affinity better than popularity does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec_plugin.errors import InputError
from rec_plugin.interactions import ITEMS, ncf_schema, vae_schema
from rec_plugin.schema import ColumnSchema, Schema, SchemaError, Tags
from training.data import Batch, JaggedIds, KeyedIds
from training.evaluate import top_items
from training.grow import check_growable
from training.loop import objective
from training.models import ModelConfig, build_model, sparse_and_dense_parameters
from training.models.cf import (
    NeuMF,
    TopKRecommender,
    beta_at,
    fuse_pretrained,
    multvae_loss,
    score_all_items,
)
from training.ranking import hit_rate_at_k, ndcg_at_k, ndcg_at_k_sets, recall_at_k, top_k
from training.step import bce_loss, optimizers

USERS, ITEM_ROWS = 400, 120  # ids 1.. (0 is the unknown bucket)


def features(users: int = USERS, items: int = ITEM_ROWS) -> Schema:
    return Schema(
        (
            ColumnSchema("click", "float32", (Tags.LABEL,)),
            ColumnSchema("user_id", "int32", (Tags.CATEGORICAL, Tags.USER_ID), cardinality=users + 1),
            ColumnSchema("item_id", "int32", (Tags.CATEGORICAL, Tags.ITEM_ID), cardinality=items),
        )
    )


def ncf_config(dim: int = 8, mode: str = "neumf", **hyper: object) -> ModelConfig:
    return ModelConfig.from_schema("ncf", ncf_schema(features()), embedding_dim=dim, ncf_mode=mode, **hyper)


def vae_config(**hyper: object) -> ModelConfig:
    hyper = {"vae_hidden": (32,), "vae_latent": 8, **hyper}
    return ModelConfig.from_schema("multvae", vae_schema(features(), 50), **hyper)


def jagged(bags: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of bags as values [N] and offsets [B + 1]."""
    lengths = torch.tensor([len(bag) for bag in bags])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    return torch.tensor([i for bag in bags for i in bag], dtype=torch.int64), offsets


def vae_inputs(bags: list[list[int]]) -> tuple:
    values, offsets = jagged(bags)
    return torch.zeros(len(bags), 0), torch.zeros(len(bags), 0, dtype=torch.int64), [values], [offsets]


@pytest.mark.parametrize("mode", ["neumf", "gmf", "mlp"])
def test_ncf_takes_the_ctr_signature_and_scripts(mode):
    config = ncf_config(mode=mode)
    assert config.categorical_features == ("user_id", "item_id") and config.ncf_mlp == (64, 32, 16)
    assert ModelConfig.from_dict(config.to_dict()) == config
    torch.manual_seed(0)
    model = build_model(config)
    assert isinstance(model, NeuMF)
    assert (model.gmf_width, model.mlp_width) == {"neumf": (4, 4), "gmf": (8, 0), "mlp": (0, 8)}[mode]
    ids = torch.stack([torch.randint(0, USERS + 1, (32,)), torch.randint(0, ITEM_ROWS, (32,))], dim=1)
    logits = model(torch.zeros(32, 0), ids, [], [])
    assert logits.shape == (32,) and logits.dtype == torch.float32
    bce_loss(logits, (logits > 0).float(), torch.ones(32)).backward()
    sparse, _ = sparse_and_dense_parameters(model)
    assert [name for name, _ in sparse] == ["embeddings.groups.0.table.weight"]
    scripted = torch.jit.script(model.eval())
    with torch.no_grad():
        torch.testing.assert_close(
            scripted(torch.zeros(32, 0), ids, [], []), model(torch.zeros(32, 0), ids, [], [])
        )


@pytest.mark.parametrize(
    ("mode", "tower"), [("neumf", (64, 32, 16)), ("gmf", ()), ("mlp", (16,)), ("neumf", ())]
)
def test_ncf_score_grid_is_forward_on_every_pair(mode, tower):
    torch.manual_seed(0)
    model = build_model(ncf_config(mode=mode, ncf_mlp=tower)).eval()
    users, items = torch.tensor([3, 1, USERS]), torch.arange(ITEM_ROWS)
    pairs = torch.stack([users.repeat_interleave(len(items)), items.repeat(len(users))], dim=1)
    with torch.no_grad():
        every_pair = model(torch.zeros(len(pairs), 0), pairs, [], []).view(len(users), len(items))
        torch.testing.assert_close(model.score_grid(users, items), every_pair)


def test_ncf_refuses_other_schemas_in_one_line():
    with pytest.raises(SchemaError, match="takes no dense features, 2 single-id and 0 list") as error:
        with_price = Schema((*features(), ColumnSchema("price", "float32", (Tags.CONTINUOUS,))))
        build_model(ModelConfig.from_schema("ncf", with_price, embedding_dim=4))
    assert "\n" not in str(error.value)
    with pytest.raises(SchemaError, match="the dim 5 must be even"):
        build_model(ncf_config(dim=5))
    with pytest.raises(SchemaError, match="ncf_mode 'both' is not one of"):
        ncf_config(mode="both")


def test_fused_pretrained_towers_mix_their_logits():
    torch.manual_seed(1)
    gmf, mlp = NeuMF(ncf_config(4, "gmf")).eval(), NeuMF(ncf_config(4, "mlp")).eval()
    fused = NeuMF(ncf_config(8)).eval()
    fused.load_state_dict(fuse_pretrained(gmf.state_dict(), mlp.state_dict(), ncf_config(8), alpha=0.3))
    ids = torch.stack([torch.randint(0, USERS + 1, (64,)), torch.randint(0, ITEM_ROWS, (64,))], dim=1)
    inputs = (torch.zeros(64, 0), ids, [], [])
    with torch.no_grad():
        torch.testing.assert_close(fused(*inputs), 0.3 * gmf(*inputs) + 0.7 * mlp(*inputs))
    with pytest.raises(SchemaError, match="pretrain GMF and MLP at half NeuMF's embedding dim"):
        fuse_pretrained(gmf.state_dict(), mlp.state_dict(), ncf_config(16))


def test_multvae_outputs_logits_and_kl_and_scripts():
    config = vae_config()
    assert config.list_features == (ITEMS,) and config.vae_dropout == 0.5
    assert (config.beta_cap, config.anneal_steps) == (1.0, None)  # annealed over the run (training/loop.py)
    # A cap above the 1 that beta reaches over the run would change nothing: refused, as a negative one.
    for cap in (2.0, -0.1):
        with pytest.raises(SchemaError, match=f"^beta_cap {cap} is never the KL weight"):
            vae_config(beta_cap=cap)
    assert vae_config(beta_cap=2.0, anneal_steps=100).beta_cap == 2.0
    torch.manual_seed(0)
    model = build_model(config)
    inputs = vae_inputs([[1, 5, 7], [], [119], [3, 4]])
    logits, kl = model(*inputs)
    assert logits.shape == (4, ITEM_ROWS) and kl.shape == (4,) and (kl >= 0).all()
    multvae_loss((logits, kl), inputs[2], inputs[3], torch.ones(4), 0.2).backward()
    [(sparse, table)], dense = sparse_and_dense_parameters(model)
    assert sparse == "encoder_table.weight" and table.grad.is_sparse
    assert all(parameter.grad is not None for _, parameter in dense)
    # Training samples the latent and drops input items; eval is deterministic.
    assert not torch.equal(model(*inputs)[0], model(*inputs)[0])
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected = model(*inputs)
        torch.testing.assert_close(model(*inputs), expected)
        torch.testing.assert_close(scripted(*inputs), expected)
        torch.testing.assert_close(model.item_scores(inputs[2][0], inputs[3][0]), expected[0])
    with pytest.raises(SchemaError, match="feature items: id 120 is outside its table item_id of 120"):
        model(*vae_inputs([[1, 120]]))


def test_the_encoder_reads_the_normalised_bag():
    torch.manual_seed(0)
    model = build_model(vae_config()).eval()
    bags = [[1, 5, 7], [2], [], [4, 9]]
    dense = torch.zeros(len(bags), ITEM_ROWS)
    for row, bag in enumerate(bags):
        dense[row, bag] = 1.0 / math.sqrt(max(len(bag), 1))
    first = torch.tanh(dense @ model.encoder_table.weight + model.encoder_bias)
    mu = model.encoder(first)[:, : model.latent]
    with torch.no_grad():
        torch.testing.assert_close(model(*vae_inputs(bags))[0], model.decoder(mu))


def test_an_unseen_item_id_0_in_a_bag_is_no_item():
    """Serving looks a rare or unseen token up as id 0, which no training bag holds: it must neither
    add its untrained encoder row nor dilute the bag's other items."""
    torch.manual_seed(0)
    model = build_model(vae_config()).eval()
    with torch.no_grad():
        with_unseen = model(*vae_inputs([[1, 0, 5], [0], [0, 0, 2]]))[0]
        without = model(*vae_inputs([[1, 5], [], [2]]))[0]
    torch.testing.assert_close(with_unseen, without)


def test_input_dropout_drops_items_and_rescales():
    torch.manual_seed(0)
    model = build_model(vae_config(vae_dropout=0.5)).train()
    values, offsets = jagged([list(range(1, 101))])
    bags = torch.stack([model._encode(values, offsets, True)[0] for _ in range(200)])
    # Dropout keeps the bag's mean input (1 / (1 - p) on the kept items), so mu's mean stays near
    # eval's; single draws differ from it.
    expected = model._encode(values, offsets, False)[0]
    assert not torch.allclose(bags[0], expected, atol=1e-3)
    torch.testing.assert_close(bags.mean(0), expected, atol=0.05, rtol=0.0)


def test_multvae_loss_is_the_weighted_negative_elbo():
    torch.manual_seed(0)
    logits, kl = torch.randn(3, 6), torch.rand(3)
    bags = [[1, 2], [5], [3]]
    values, offsets = jagged(bags)
    hot = torch.zeros(3, 6)
    for row, bag in enumerate(bags):
        hot[row, bag] = 1.0
    per_row = -(torch.log_softmax(logits, dim=1) * hot).sum(1) + 0.1 * kl
    weight = torch.tensor([1.0, 1.0, 0.0])  # the last row is padding
    loss = multvae_loss((logits, kl), [values], [offsets], weight, 0.1)
    torch.testing.assert_close(loss, per_row[:2].mean())


def test_beta_anneals_to_its_cap():
    assert beta_at(0, 0.2, 200_000) == 0.0 and beta_at(20_000, 0.2, 200_000) == pytest.approx(0.1)
    assert beta_at(10**7, 0.2, 200_000) == 0.2
    assert beta_at(50, cap=1.0, anneal_steps=100) == 0.5 and beta_at(3, cap=0.3, anneal_steps=0) == 0.3


def test_a_popularity_started_decoder_ranks_by_the_counts_and_softmaxes_to_their_shares():
    torch.manual_seed(0)
    model = build_model(vae_config()).eval()
    counts = torch.zeros(ITEM_ROWS, dtype=torch.float64)
    counts[1:] = torch.randperm(ITEM_ROWS - 1).to(torch.float64) * 3
    model.start_from_popularity(counts)
    output = model.decoder[-1]
    torch.testing.assert_close(output.bias.softmax(0).double(), (counts + 1) / (counts + 1).sum())
    with torch.no_grad():
        output.weight.zero_()  # what the latent adds: left out, the bias alone ranks
        ranked = score_all_items(model, *jagged([[5], [7, 9]])).topk(10).indices
    popular = torch.argsort(counts, descending=True)
    for row, seen in enumerate(([5], [7, 9])):
        assert ranked[row].tolist() == [i for i in popular.tolist() if i not in seen][:10]


def test_mult_vae_anneals_its_kl_weight_over_the_run_unless_told_over_how_many_steps():
    torch.manual_seed(0)
    model = build_model(vae_config())
    inputs = vae_inputs([[1, 5, 7], [3, 4]])
    values, offsets = inputs[2][0], inputs[3][0]
    batch = Batch(
        inputs[0], KeyedIds((), inputs[1]), {ITEMS: JaggedIds(values, offsets)}, torch.zeros(2), torch.ones(2)
    )
    outputs = model(*inputs)
    at = {
        (config.anneal_steps, step, run): objective(config, outputs, batch, step, run).item()
        for config in (vae_config(), vae_config(anneal_steps=10))
        for step, run in ((50, 100), (100, 100))
    }
    nll = multvae_loss(outputs, inputs[2], inputs[3], torch.ones(2), 0.0).item()
    kl = outputs[1].mean().item()
    assert at[(None, 50, 100)] == pytest.approx(nll + 0.5 * kl)  # None: over the run's 100 steps
    assert at[(None, 100, 100)] == pytest.approx(nll + kl)
    assert at[(10, 50, 100)] == pytest.approx(nll + kl)  # 10 steps given: capped at step 10


def test_top_k_recommender_leaves_out_the_bag_and_id_0():
    torch.manual_seed(0)
    model = build_model(vae_config())
    recommender = TopKRecommender(model, 10)
    scripted = torch.jit.script(recommender)
    bags = [[1, 5, 7], [], [119, 2, 3, 4, 5, 6, 8, 9], [10]]
    values, offsets = jagged(bags)
    with torch.no_grad():
        ids, scores = recommender(values, offsets)
        script_ids, script_scores = scripted(values, offsets)
        full = model.eval().item_scores(values, offsets)
    assert ids.shape == scores.shape == (4, 10) and ids.dtype == torch.int64
    assert torch.equal(script_ids, ids) and torch.equal(script_scores, scores)
    for row, bag in enumerate(bags):
        eligible = [i for i in range(1, ITEM_ROWS) if i not in bag]
        brute = sorted(eligible, key=lambda i: -float(full[row, i]))[:10]
        assert ids[row].tolist() == brute and not set(brute) & {0, *bag}
        torch.testing.assert_close(scores[row], full[row, brute])
    torch.testing.assert_close(score_all_items(model, values, offsets).topk(10).indices, ids)
    # A bag of every item but three: the rest of the row pads with -1.
    ids, scores = TopKRecommender(model, 5)(*jagged([list(range(4, ITEM_ROWS))]))
    assert sorted(ids[0, :3].tolist()) == [1, 2, 3] and ids[0, 3:].tolist() == [-1, -1]
    assert torch.isinf(scores[0, 3:]).all()
    with pytest.raises(ValueError, match="k must be in 1..119"):
        TopKRecommender(model, ITEM_ROWS)
    # The top 1,000 of a catalogue of 120 rows: its 119 items but id 0, the bag's left out (padded).
    ranked, _ = top_items(model, [np.array([1, 5]), np.arange(4, ITEM_ROWS)], 1000)
    assert ranked.shape == (2, ITEM_ROWS - 1) and (ranked[0, :-2] > 0).all() and (ranked[0, -2:] == -1).all()
    assert (ranked[1, 3:] == -1).all()
    assert ndcg_at_k_sets(ranked, [np.array([7]), np.array([2])], 100) > 0


# Learning: users and items in latent clusters, clicks drawn by popularity mostly within the user's cluster.
CLUSTERS, CLICKS = 6, 15


def planted(seed: int) -> list[np.ndarray]:
    """Each user's distinct clicked item ids (1..ITEM_ROWS - 1)."""
    rng = np.random.default_rng(seed)
    items = np.arange(1, ITEM_ROWS)
    popularity = 1.0 / np.sqrt(rng.permutation(len(items)) + 1.0)
    user_cluster = rng.integers(CLUSTERS, size=USERS)
    bags = []
    for cluster in user_cluster:
        weights = popularity * np.where(items % CLUSTERS == cluster, 1.0, 0.03)
        bags.append(rng.choice(items, CLICKS, replace=False, p=weights / weights.sum()))
    return bags


@pytest.fixture
def one_thread():
    """Small steps on a shared machine: one intra-op thread is many times faster than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(model: torch.nn.Module, batches: int, loss_of, seed: int) -> None:
    """A plain loop: SparseAdam on the tables, Adam on the rest."""
    torch.manual_seed(seed)
    steppers = optimizers(model, 0.01, 0.003)
    model.train()
    for step in range(batches):
        for stepper, _ in steppers:
            stepper.zero_grad()
        loss_of(step).backward()
        for stepper, _ in steppers:
            stepper.step()
    model.eval()


def test_neumf_learns_a_planted_affinity_better_than_popularity(one_thread):
    rng = np.random.default_rng(1)
    bags = planted(1)
    held = np.array([bag[-1] for bag in bags])
    seen = [set(bag.tolist()) for bag in bags]
    users = np.repeat(np.arange(1, USERS + 1), CLICKS - 1)
    positives = np.concatenate([bag[:-1] for bag in bags])
    counts = np.bincount(positives, minlength=ITEM_ROWS)

    def negatives(user: int, n: int) -> np.ndarray:
        pool = np.array([i for i in range(1, ITEM_ROWS) if i not in seen[user - 1]])
        return rng.choice(pool, n, replace=False)

    negative_items = np.concatenate([negatives(u, 4 * (CLICKS - 1)) for u in range(1, USERS + 1)])
    rows_user = torch.tensor(np.concatenate([users, np.repeat(np.arange(1, USERS + 1), 4 * (CLICKS - 1))]))
    rows_item = torch.tensor(np.concatenate([positives, negative_items]))
    labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negative_items))])
    candidates = np.stack([np.concatenate([[held[u - 1]], negatives(u, 50)]) for u in range(1, USERS + 1)])

    torch.manual_seed(0)
    model = build_model(ncf_config(16, ncf_mlp=(32, 16, 8)))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))

    def loss_of(step: int) -> torch.Tensor:
        batch = order[(step * 256) % len(order) :][:256]
        ids = torch.stack([rows_user[batch], rows_item[batch]], dim=1)
        return bce_loss(model(torch.zeros(len(batch), 0), ids, [], []), labels[batch], torch.ones(len(batch)))

    train(model, 800, loss_of, 3)
    user_ids = torch.arange(1, USERS + 1).repeat_interleave(candidates.shape[1])
    ids = torch.stack([user_ids, torch.tensor(candidates.reshape(-1))], dim=1)
    with torch.no_grad():
        scores = model(torch.zeros(len(ids), 0), ids, [], []).reshape(candidates.shape).numpy()
    positive = np.zeros(USERS, dtype=np.int64)
    model_hr, model_ndcg = hit_rate_at_k(scores, positive, 10), ndcg_at_k(scores, positive, 10)
    popular = counts[candidates].astype(np.float64)
    popular_hr, popular_ndcg = hit_rate_at_k(popular, positive, 10), ndcg_at_k(popular, positive, 10)
    print(
        f"NeuMF HR@10 {model_hr:.3f} NDCG@10 {model_ndcg:.3f}; popularity {popular_hr:.3f} {popular_ndcg:.3f}"
    )
    assert model_hr > popular_hr + 0.25 and model_ndcg > popular_ndcg + 0.15


def test_multvae_learns_a_planted_affinity_better_than_popularity(one_thread):
    bags = planted(2)
    train_bags, test_bags = bags[:300], bags[300:]
    fold_in = [bag[:12].tolist() for bag in test_bags]
    heldout = [bag[12:] for bag in test_bags]
    torch.manual_seed(0)
    model = build_model(vae_config(vae_hidden=(64,), vae_latent=16))

    def loss_of(step: int) -> torch.Tensor:
        rows = np.random.default_rng(step).choice(len(train_bags), 100, replace=False)
        inputs = vae_inputs([train_bags[r].tolist() for r in rows])
        outputs = model(*inputs)
        return multvae_loss(outputs, inputs[2], inputs[3], torch.ones(100), beta_at(step, 0.2, 200))

    train(model, 400, loss_of, 4)
    ranked = score_all_items(model, *jagged(fold_in)).topk(20).indices.numpy()
    model_recall = recall_at_k(ranked, heldout, 20)
    counts = np.bincount(np.concatenate(train_bags), minlength=ITEM_ROWS).astype(np.float64)
    popular = np.tile(counts, (len(fold_in), 1))
    for row, bag in enumerate(fold_in):
        popular[row, [0, *bag]] = -np.inf
    popular_recall = recall_at_k(top_k(popular, 20), heldout, 20)
    print(f"Mult-VAE Recall@20 {model_recall:.3f}; popularity {popular_recall:.3f}")
    assert model_recall > popular_recall + 0.25


def test_a_warm_start_may_change_the_kl_schedule_but_not_the_layers():
    saved_before_the_run_long_schedule = vae_config(beta_cap=0.2, anneal_steps=200_000)
    check_growable(saved_before_the_run_long_schedule, vae_config())
    with pytest.raises(InputError, match=r"hyperparameters \['vae_latent'\] changed"):
        check_growable(saved_before_the_run_long_schedule, vae_config(vae_latent=4))
