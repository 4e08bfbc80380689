"""The user-item interaction tables the collaborative-filtering models (NCF, Mult-VAE) train and are
evaluated on: `sparkrec interactions` builds them from a featurized table whose schema tags a
`user_id` and an `item_id` column. This module alone names their folder, tables, columns and schemas.

Under one folder (a path or URI):

    ncf_train/   Delta: <user>, <item> (int64 ids of the workflow's vocabularies), <label> (int32: 1 for
                 a click, 0 for a sampled negative); every positive but each user's latest, and
                 `negatives` sampled items per positive (popularity^alpha, never a positive of that user),
                 shuffled: every file mixes positives and negatives in a seeded order
    ncf_eval/    Delta: <user>, <item>, <label>, ORACLE_SCORE, POPULARITY: per evaluated user, their
                 latest positive (label 1) and EVAL_NEGATIVES sampled negatives (label 0)
    vae/         Delta, partitioned by SPLIT: <user>, ITEMS (the user's clicked items: all of them for
                 train users, the 80% fold-in part for held-out users), HELDOUT (the other 20%, empty
                 for train users), SPLIT (train, valid or test), ORACLE_RANKING and POPULARITY_RANKING
                 (held-out users: the top RANKING_DEPTH items by the planted model and by popularity,
                 fold-in items left out; null where there is no planted model), <label> (1: the loader
                 reads a label)
    interactions.json   the InteractionsDescription

ORACLE_SCORE and ORACLE_RANKING follow the generator's Bayes-optimal click model: log P(the item is
shown that day) + log sigmoid(planted logit), so they rank what a user clicks, exposure included.

<user>, <item> and <label> keep the workflow schema's names, so the models' inputs and the serving
preprocessing (the workflow's Categorify of those two columns) follow the same schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from rec_plugin.schema import ColumnSchema, Schema, SchemaError, Tags

NCF_TRAIN = "ncf_train"
NCF_EVAL = "ncf_eval"
VAE = "vae"
DESCRIPTION_FILE = "interactions.json"

ITEMS = "items"
HELDOUT = "heldout_items"
SPLIT = "split"
ORACLE_SCORE = "oracle_score"
POPULARITY = "popularity"
ORACLE_RANKING = "oracle_ranking"
POPULARITY_RANKING = "popularity_ranking"
TRAIN_SPLIT = "train"  # the users Mult-VAE trains on
VALID_SPLIT = "valid"  # the held-out users that pick its epoch
TEST_SPLIT = "test"  # the held-out users it is measured on
VAE_SPLITS = (TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT)

EVAL_NEGATIVES = 100  # per evaluated user, as in the NCF paper (He et al. 2017)
RANKING_DEPTH = 100  # NDCG@100 is the deepest metric read from a ranking
FOLD_IN_SHARE = 0.8  # of a held-out user's items, as in Liang et al. 2018


@dataclass(frozen=True)
class InteractionsLayout:
    """The folder's tables and description file; `versions` pins each table's Delta version, as the
    description names them (`pinned`): readers read that build, whatever a later rebuild cut off
    between its tables' writes left newer."""

    root: str
    versions: Mapping[str, int] = field(default_factory=dict)

    def pinned(self, description: InteractionsDescription) -> InteractionsLayout:
        return replace(self, versions=dict(description.table_versions))

    def version(self, table: str) -> int | None:
        """The version of table `table` (NCF_TRAIN, NCF_EVAL or VAE) to read; None: the latest."""
        return self.versions.get(table)

    @property
    def ncf_train(self) -> str:
        return f"{self.root}/{NCF_TRAIN}"

    @property
    def ncf_eval(self) -> str:
        return f"{self.root}/{NCF_EVAL}"

    @property
    def vae(self) -> str:
        return f"{self.root}/{VAE}"

    @property
    def description(self) -> str:
        return f"{self.root}/{DESCRIPTION_FILE}"


@dataclass(frozen=True)
class InteractionsDescription:
    """How the tables were built (reproducible from it) and what they hold."""

    features_table: str
    features_version: int
    seed: int
    negatives: int  # sampled per training positive
    popularity_exponent: float  # alpha: negatives drawn with probability ~ clicks^alpha
    max_items_per_user: int  # a user's bag keeps their latest this many items (the ITEMS list length)
    users: int
    items: int
    rows: dict[str, int]  # per table name (and per VAE split: "vae_train", "vae_valid", "vae_test")
    planted: bool  # ORACLE_SCORE / ORACLE_RANKING hold the planted model's scores
    heldout_share: float = 0.1  # of the users with enough items, to each of valid and test
    max_heldout_users: int = 10_000  # at most this many each to valid and test (in expectation)
    negatives_dropped: int = 0  # training negatives whose every draw was a positive of the user
    # Each table's Delta version this build wrote (none in a description of before they were kept).
    table_versions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> InteractionsDescription:
        return cls(**json.loads(text))


def user_column(features: Schema) -> ColumnSchema:
    return _tagged_one(features, Tags.USER_ID)


def item_column(features: Schema) -> ColumnSchema:
    return _tagged_one(features, Tags.ITEM_ID)


def ncf_schema(features: Schema) -> Schema:
    """NCF's inputs: the workflow's user and item columns (their cardinalities and vocabularies) and
    its label."""
    return Schema((user_column(features), item_column(features), features.label))


def vae_schema(features: Schema, max_items_per_user: int) -> Schema:
    """Mult-VAE's input: a user's bag of items, ids of the item column's vocabulary and table."""
    item = item_column(features)
    bag = ColumnSchema(
        ITEMS,
        "list<int64>",
        (Tags.CATEGORICAL, Tags.LIST),
        cardinality=item.cardinality,
        max_length=max_items_per_user,
        vocabulary=item.vocabulary,
        embedding_table=item.embedding_table_name,
    )
    return Schema((bag, replace(features.label, dtype="int32")))


def _tagged_one(features: Schema, tag: str) -> ColumnSchema:
    columns = features.tagged(tag).categorical.columns
    if len(columns) != 1:
        raise SchemaError(
            f"collaborative filtering needs exactly one single-id categorical column tagged {tag!r}; "
            f"the features schema has {len(columns)} (tag one in the dataset definition's columns)"
        )
    if columns[0].cardinality is None:
        raise SchemaError(f"column {columns[0].name!r} has no cardinality: fit the workflow first")
    return columns[0]
