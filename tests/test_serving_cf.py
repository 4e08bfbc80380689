"""The collaborative-filtering models on a real tritonserver (127.0.0.1): a workflow over the bundled
e-commerce dataset's columns (user and item vocabularies, the recent items in the item vocabulary,
and features the CF models do not read) fitted by Spark, an untrained seeded NCF and Mult-VAE each
exported by `sparkrec export --workflow` from its run directory, and the served answers equal to the
in-process models on the ids the Spark workflow makes of the same raw tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.dataset import load_dataset
from rec_plugin.errors import InputError
from rec_plugin.interactions import ncf_schema, vae_schema
from rec_plugin.ops import Categorify, Cross, FillMissing, ListCategorify, Normalize
from rec_plugin.ops.categorify import read_vocabularies
from rec_plugin.schema import LINE_NUMBER, Schema
from rec_plugin.workflow import Node, Workflow
from serving.client import _inputs, raw_spec, recommend, score_candidates
from serving.export import top_items, torchscript
from serving.server import TritonServer
from spark_jobs.export import main as export
from spark_jobs.score import score
from training.models import ModelConfig, build_model
from training.run_directory import RunDirectory

ECOMMERCE = load_dataset("ecommerce")
USERS, ITEMS, ROWS = 30, 60, 600
RARE = "i_rare"  # seen once: under the workflow's freq_threshold of 3, so id 0
UNSEEN = "never seen"
MAX_ITEMS = 10  # Mult-VAE's bag: a user's latest items
TOP_K = 12


def _raw_rows() -> pd.DataFrame:
    """Impressions of popular and rare items to users, each with a short list of recent items."""
    rng = np.random.default_rng(0)
    popularity = 1 / np.arange(1, ITEMS + 1) ** 0.8
    items = [f"i{j}" for j in rng.choice(ITEMS, ROWS, p=popularity / popularity.sum())]
    items[7] = RARE
    return pd.DataFrame(
        {
            "day": 0,
            "click": rng.integers(0, 2, ROWS).astype(np.int32),
            "user_id": [f"u{u}" for u in rng.integers(0, USERS, ROWS)],
            "item_id": items,
            "category": [f"c{j % 5}" for j in range(ROWS)],
            "brand": [f"b{j % 7}" for j in range(ROWS)],
            "price": rng.uniform(1, 100, ROWS),
            "hour": rng.integers(0, 24, ROWS).astype(np.int32),
            "device": [("mobile", "desktop")[j % 2] for j in range(ROWS)],
            "recent_items": [[f"i{j}" for j in rng.choice(ITEMS, rng.integers(1, 6))] for _ in range(ROWS)],
            "source_file": "day_0/part-00000.tsv",
            LINE_NUMBER: np.arange(ROWS, dtype=np.int64),
        }
    )


# What a bronze row never lacks, for rows of the raw fields a request carries (the rest null).
REQUIRED = {"day": 0, "click": 0, "source_file": "request"}


def _frame(spark, rows: pd.DataFrame):  # noqa: ANN001, ANN202 - a Spark DataFrame of bronze rows
    """Raw rows as bronze rows: the columns they lack null (or REQUIRED's)."""
    bronze = ECOMMERCE.bronze_schema()
    records = [
        {f.name: row.get(f.name, REQUIRED.get(f.name)) for f in bronze} for row in rows.to_dict("records")
    ]
    return spark.createDataFrame(records, bronze)


def _run(location: Path, name: str, schema: Schema, **sizes: object) -> RunDirectory:
    """A run directory as `sparkrec train` leaves one, at the model's seeded initial weights."""
    run = RunDirectory(location)
    config = ModelConfig.from_schema(name, schema, **sizes)
    torch.manual_seed(7)
    run.write_model_config(config)
    run.save_weights(build_model(config).state_dict())
    run.write_schema(schema)
    return run


@pytest.fixture(scope="module")
def shop(spark, tmp_path_factory) -> tuple[str, Schema, dict[int, str]]:
    """A workflow of user and item vocabularies (the recent items in the item one) and of features
    the CF models do not read, fitted on the raw rows: its folder, its output schema, and its item
    vocabulary by id (read from Spark's table, not from serving's export)."""
    root = tmp_path_factory.mktemp("shop")
    graph = [
        Node(("category", "device"), (Cross(buckets=100),)),
        Node(("price",), (FillMissing(value=0), Normalize())),
        Node(("user_id", "item_id"), (Categorify(freq_threshold=3),)),
        Node(("recent_items",), (ListCategorify(max_length=20, vocabulary_of="item_id"),)),
        "click",
    ]
    workflow = Workflow(graph, ECOMMERCE.input_schema()).fit(_frame(spark, _raw_rows()))
    path = str(root / "workflow")
    workflow.save(path)
    workflow.release()
    schema = Workflow.load_schema(path, spark)
    vocabulary = read_vocabularies(spark, path, {"item_id": schema["item_id"].vocabulary})["item_id"]
    return path, schema, {r.id: r.value for r in vocabulary.collect()}


@pytest.fixture(scope="module")
def served(spark, shop, tmp_path_factory):
    """NCF and Mult-VAE runs exported as `sparkrec export --workflow` does (dispatching on the run's
    model) into one repository, served by one tritonserver: the server, an HTTP client, both runs."""
    workflow, features, _ = shop
    root = tmp_path_factory.mktemp("cf")
    runs = {
        "ncf": _run(root / "ncf", "ncf", ncf_schema(features), embedding_dim=8, ncf_mlp=[16, 8]),
        "vae": _run(root / "vae", "multvae", vae_schema(features, MAX_ITEMS), vae_hidden=[16], vae_latent=8),
    }
    repository = root / "repository"
    for name, run in runs.items():
        argv = ["--run-dir", run.uri, "--repository", str(repository), "--name", name, "--workflow", workflow]
        assert export([*argv, "--top-k", str(TOP_K)]) == 1
    with TritonServer(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        for name in ("ncf", "ncf_v1", "vae"):
            client.load_model(name)
        yield server, client, runs
        client.close()


def _spark_ids(spark, workflow: str, rows: pd.DataFrame) -> pd.DataFrame:  # noqa: ANN001
    """The workflow's output for raw rows, in their order: the ids Spark gives their tokens."""
    out = Workflow.load(workflow, spark).transform(_frame(spark, rows), keep=(LINE_NUMBER,)).toPandas()
    return rows[[LINE_NUMBER]].merge(out, on=LINE_NUMBER, validate="one_to_one")


def test_ncf_scores_one_user_against_a_thousand_candidates_as_in_process(spark, shop, served):
    workflow, _, _ = shop
    _, client, runs = served
    spec = raw_spec(client, "ncf")
    # Only what NCF's ids are made of travels: the user's and the item's raw tokens.
    assert [c.name for c in spec.categorical] == ["user_id", "item_id"]
    assert not spec.continuous and not spec.lists
    candidates = [RARE, UNSEEN, *(f"i{j % (ITEMS + 5)}" for j in range(998))]
    users = ["u3", "u11", "a new user"]
    rows = pd.DataFrame({"user_id": np.repeat(users, 1000), "item_id": candidates * len(users)})
    ids = _spark_ids(spark, workflow, rows.assign(**{LINE_NUMBER: np.arange(len(rows))}))
    ids = ids[["user_id", "item_id"]].to_numpy(np.int64).reshape(len(users), 1000, 2)
    assert (ids[:, :2, 1] == 0).all() and (ids[:, 2:, 1] > 0).mean() > 0.8  # rare and unseen items: id 0
    assert (ids[:2, :, 0] > 0).all() and (ids[2, :, 0] == 0).all()  # so is an unseen user
    model = torchscript(runs["ncf"].uri)
    for user, user_ids in zip(users, ids):
        with torch.no_grad():
            expected = model(torch.zeros(1000, 0), torch.from_numpy(user_ids), [], []).numpy().reshape(-1)
        scores = score_candidates(client, "ncf", user, candidates)
        assert scores.shape == (1000,) and scores.dtype == np.float32
        assert np.abs(scores - expected).max() <= 1e-5
        assert expected.std() > 1e-4  # the items' scores differ: a wrong id would show
        # The user counts too: another user's scores of the same items differ.
        assert np.abs(score_candidates(client, "ncf", "u5", candidates) - expected).max() > 1e-4
    version_1 = score_candidates(client, "ncf", "u3", candidates[:5], version=1)
    np.testing.assert_array_equal(version_1, score_candidates(client, "ncf", "u3", candidates[:5]))


def test_multvae_serves_the_in_process_top_k_without_the_users_items(spark, shop, served):
    workflow, _, vocabulary = shop
    _, client, runs = served
    recent = [
        ["i1", "i2", "i3"],
        ["i0", RARE, UNSEEN, "i5"],
        [f"i{j}" for j in range(4, 4 + MAX_ITEMS)],
        ["i9"],
    ]
    rows = pd.DataFrame({"recent_items": recent, LINE_NUMBER: np.arange(len(recent))})
    bags = [np.asarray(v, np.int64) for v in _spark_ids(spark, workflow, rows)["recent_items"]]
    assert bags[1][1:3].tolist() == [0, 0] and all(len(b) == len(r) for b, r in zip(bags, recent))
    offsets = torch.from_numpy(np.cumsum([0, *map(len, bags)]))
    with torch.no_grad():
        ids, scores = top_items(runs["vae"].uri, TOP_K)(
            torch.zeros(len(bags), 0), torch.zeros(len(bags), 0, dtype=torch.int64),
            [torch.from_numpy(np.concatenate(bags))], [offsets],
        )  # fmt: skip
    served_top = recommend(client, "vae", recent)
    np.testing.assert_array_equal(served_top.ids, ids.numpy())
    assert np.abs(served_top.scores - scores.numpy()).max() <= 1e-5
    assert served_top.items.tolist() == [[vocabulary[i] for i in row] for row in ids.numpy()]
    for bag, tokens, row_ids, row_items in zip(bags, recent, served_top.ids, served_top.items):
        assert not set(row_ids) & set(bag) and 0 not in row_ids
        assert not set(row_items) & set(tokens)
    assert len({tuple(row) for row in served_top.ids}) > 1  # the bag moves the ranking
    # An item sent twice weighs once, and rare or unseen tokens are no items: trained bags hold neither.
    again = recommend(client, "vae", [["i1", "i2", "i1", "i3", "i2"], ["i0", "i5"]])
    np.testing.assert_array_equal(again.ids, served_top.ids[:2])
    assert np.abs(again.scores - served_top.scores[:2]).max() <= 1e-5
    first = recommend(client, "vae", recent[:1], k=3)
    np.testing.assert_array_equal(first.ids, served_top.ids[:1, :3])
    assert first.items.shape == (1, 3) and isinstance(first.items[0, 0], str)


def test_bad_requests_are_one_line_errors_and_both_ensembles_serve_on(served):
    _, client, _ = served
    for call, says in [
        (lambda: score_candidates(client, "ncf", "u3", []), "one or more candidate item tokens"),
        (lambda: score_candidates(client, "ncf", None, ["i1"]), "needs the user's raw token"),
        (lambda: score_candidates(client, "vae", "u3", ["i1"]), "vae is not an NCF ensemble"),
        (lambda: recommend(client, "vae", []), "one list of recent item tokens per user"),
        (lambda: recommend(client, "vae", [["i1"]], k=TOP_K + 1), f"serves the top {TOP_K} items"),
    ]:
        with pytest.raises(ValueError, match=says) as refused:
            call()
        assert "\n" not in str(refused.value)
    # On the wire: items without their user (one token per row, not two) is refused by the server.
    items_only = {"RAW_CATEGORICAL": np.array([[b"i1"], [b"i2"]], object)}
    with pytest.raises(InferenceServerException) as refused:
        client.infer("ncf", _inputs(client, items_only))
    message = refused.value.message()
    assert (
        "unexpected shape for input 'RAW_CATEGORICAL' for model 'ncf'. Expected [-1,2], got [2,1]" in message
    )
    assert "\n" not in message
    assert client.is_server_live() and client.is_model_ready("ncf") and client.is_model_ready("vae")
    assert score_candidates(client, "ncf", "u3", ["i1", "i2"]).shape == (2,)
    assert recommend(client, "vae", [["i1"]]).ids.shape == (1, TOP_K)


def test_batch_scoring_refuses_a_recommender_in_one_line(spark, shop, served, tmp_path):
    """`sparkrec score` writes click probabilities: Mult-VAE's export outputs top items, and its
    inputs (a bag of items) are no workflow output, so each task would end in a trace."""
    workflow, _, _ = shop
    server, _, _ = served
    bronze = str(tmp_path / "bronze")
    _frame(spark, _raw_rows()).write.format("delta").partitionBy("day").save(bronze)
    with pytest.raises(InputError, match="vae_model/1 is a recommender's .*sparkrec recommend"):
        score(spark, bronze, [0], str(tmp_path / "predictions"), str(server.repository), workflow, name="vae")
    with pytest.raises(InputError, match=r"model vae outputs \[.*\], not click probabilities"):
        score(spark, bronze, [0], str(tmp_path / "predictions"), via_triton_url=server.grpc_url, name="vae")
    assert not (tmp_path / "predictions").exists()
