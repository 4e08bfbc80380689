"""sparkrec generate-ecommerce: e-commerce click logs (conf/datasets/ecommerce.json) with a planted truth.

Writes <out>/raw/day_<d>/part-<i>.tsv[.gz] (one line per impression: click, user_id, item_id, category,
brand, price, hour, device, recent_items; tab-separated; empty = missing), <out>/oracle (a Delta table:
the true click probability of every line, keyed by file and line number) and <out>/planted_model.json.
Runs on the executors: every random quantity is a hash of (seed, row, user, item or history slot)
written as Spark SQL, so there is no driver-side loop over rows and no join; only a few small tables
(category centroids and their Gram matrix, category x device effects, category price levels) are drawn
with numpy on the driver and enter the SQL as literals.

    spark-submit spark_jobs/generate_ecommerce.py --out data/shop --days 4 --rows-per-day 500000

The planted model, per impression of item i (category c, brand b) to user u on device d at hour h:

    logit = bias + w_item[i] + w_brand[b] + w_cd[c, d] - beta * z_price[i] + w_hour(h)     first order
          + s_ui * <u_user[u], v_item[i]> + s_h * mean_j sim(i, r_j)                     second order

with w_item an item's own effect less ITEM_POPULARITY_WEIGHT * log(1 + its popularity rank),
u_user = a * (sum of the centroids of u's 3 favourite categories) + b * noise_u, v_item = p *
centroid[c] + q * noise_i (rank latent_dim), r_1..r_L the user's recent items, and sim(i, r) =
E<v_i, v_r> over the item noise = p^2 <centroid[c], centroid[c_r]> + q^2 latent_dim [i = r] (the same
category family, or the very item seen again). The list holds L (0..history_length, uniform) items
of the day-0 catalogue drawn from the user's favourite categories (20% from any category), popular
items more often, most recent first; it slides by HISTORY_SHIFT items a day, so it is the same all day
for a user and overlaps the day before. z_price is the item's log price against its category's
(log-normal prices; about 5% of lines leave the price empty). Users are drawn with a power-law
activity, items Zipf-like within Zipf-like categories; on later days a share new_entity_rate of
impressions goes to users and (independently) to items born after day 0 (drift). Each term's share of
the logit's variance is fixed (SHARES), the whole scaled to logit_scale, and the bias calibrated on
day 0 to the requested positive rate.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from rec_plugin.dataset import load_dataset
from rec_plugin.errors import run_command
from spark_jobs.draws import centered, sql_sum, uniform, zipf_rank
from spark_jobs.draws import sql_double as _d
from spark_jobs.generate import (
    check_file_layout,
    oracle_rows,
    parse_generator_args,
    progress,
    write_outputs,
)
from spark_jobs.session import WIDE_PROJECTIONS, build_session, session_conf

DATASET = load_dataset("ecommerce")
DEVICES = ("mobile", "desktop", "tablet", "tv")
DEVICE_SHARES = (0.55, 0.30, 0.10, 0.05)
# A user's favourite categories; the share of history items drawn from any category instead.
FAVOURITES = 3
EXPLORE_RATE = 0.2
# Items a user's recent list gains (and loses) a day.
HISTORY_SHIFT = 5
# Shares of a user factor that its favourite categories explain, and of an item factor its category.
USER_FAVOURITE_SHARE, ITEM_CATEGORY_SHARE = 0.7, 0.6
# Weight of log(1 + an item's popularity rank in its category) in its effect, beside its own (sd 1).
ITEM_POPULARITY_WEIGHT = 0.3
# Each logit term's share of the logit's variance: first-order terms, then the two second-order ones.
SHARES = {
    "item": 0.18,
    "brand": 0.04,
    "category_device": 0.10,
    "price": 0.06,
    "hour": 0.02,
    "user_item": 0.30,
    "history": 0.30,
}
FIRST_ORDER = ("item", "brand", "category_device", "price", "hour")
# A raw line's user and item tokens: the prefix and the generator's index ("u17", "i3").
USER_PREFIX, ITEM_PREFIX = "u", "i"
# The bits (offset, width) of an impression's item hash behind each draw of its item: the category,
# whether the item is new, its rank in the category (a new item's place in its cohort) and a new item's
# birth day. Named because item_exposure counts the same draws.
_CATEGORY_BITS, _NEW_ITEM_BITS, _RANK_BITS, _BORN_BITS = (0, 20), (20, 12), (32, 24), (56, 8)
_CALIBRATION_ROWS = 20_000
_PRICE_LOG_SIGMA = 0.6


@dataclass(frozen=True)
class EcommerceConfig:
    """What to generate. The defaults give users dozens of impressions each over the 4 days; raise
    users and items to millions (--users 1000000 --items 1000000) for a larger catalogue: every draw
    is a hash, so the cost stays per row whatever their number. `items` is rounded down to a multiple
    of `categories` (each has items // categories); `user_activity_exponent` a is the power law of
    user activity (P(user of rank r) ~ r^-a)."""

    days: int = 4
    rows_per_day: int = 500_000
    files_per_day: int = 2
    seed: int = 42
    users: int = 50_000
    items: int = 20_000
    categories: int = 50
    brands: int = 500
    latent_dim: int = 8
    history_length: int = 20
    positive_rate: float = 0.15
    new_entity_rate: float = 0.02
    price_missing_rate: float = 0.05
    user_activity_exponent: float = 0.5
    logit_scale: float = 1.6
    compression: str = "none"

    def __post_init__(self) -> None:
        check_file_layout(self)
        if not 1 <= self.categories <= self.items or self.brands < self.categories or self.users < 1:
            raise ValueError("need users >= 1 and 1 <= categories <= items and brands >= categories")
        if self.categories > 200:
            raise ValueError(
                "at most 200 categories (the planted model holds their Gram matrix as a literal)"
            )
        if not 1 <= self.latent_dim <= 8:
            raise ValueError("latent_dim must be 1 to 8 (each factor takes 8 bits of one 64-bit hash)")
        if self.history_length < 0:
            raise ValueError("history_length must be 0 or more")
        if not 0 <= self.user_activity_exponent < 1:
            raise ValueError("user_activity_exponent must be in [0, 1)")
        if not 0 < self.positive_rate < 1:
            raise ValueError("positive_rate must be in (0, 1)")
        for name in ("new_entity_rate", "price_missing_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1)")


@dataclass(frozen=True)
class EcommerceModel:
    """All parameters of the planted click model; derived from the seed, saved beside the data."""

    seed: int
    users: int
    categories: int
    items_per_category: int
    brands_per_category: int
    new_users_per_day: int
    new_items_per_category_per_day: int
    new_entity_rate: float
    user_activity_exponent: float
    price_missing_rate: float
    latent_dim: int
    history_length: int
    centroids: list[list[float]]
    category_device: list[list[float]]
    price_log_mu: list[float]
    price_log_sigma: float = _PRICE_LOG_SIGMA
    term_means: dict[str, float] | None = None
    term_scales: dict[str, float] | None = None
    bias: float = 0.0

    @classmethod
    def from_config(cls, config: EcommerceConfig) -> EcommerceModel:
        """The seed's tables: category centroids (centred, unit variance), category x device effects and
        each category's mean log price; scales and bias come from the calibration."""
        rng = np.random.default_rng(config.seed)
        centroids = rng.standard_normal((config.categories, config.latent_dim))
        if config.categories > 1:
            # No category is liked on average: the second-order terms carry no first-order effect.
            centroids = (centroids - centroids.mean(axis=0)) / centroids.std(axis=0)
        items_per_category = config.items // config.categories
        return cls(
            seed=config.seed,
            users=config.users,
            categories=config.categories,
            items_per_category=items_per_category,
            brands_per_category=config.brands // config.categories,
            new_users_per_day=max(1, round(config.users * config.new_entity_rate)),
            new_items_per_category_per_day=max(1, round(items_per_category * config.new_entity_rate)),
            new_entity_rate=config.new_entity_rate,
            user_activity_exponent=config.user_activity_exponent,
            price_missing_rate=config.price_missing_rate,
            latent_dim=config.latent_dim,
            history_length=config.history_length,
            centroids=centroids.round(4).tolist(),
            category_device=rng.standard_normal((config.categories, len(DEVICES))).round(4).tolist(),
            price_log_mu=rng.uniform(1.5, 5.0, config.categories).round(3).tolist(),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EcommerceModel:
        return cls(**json.loads(text))


def _cells_below(x: np.ndarray, width: int) -> np.ndarray:
    """How many of the 2^width values (b + 0.5) / 2^width of a uniform draw lie below each x."""
    cells = 1 << width
    return np.clip(np.ceil(np.asarray(x, dtype=np.float64) * cells - 0.5), 0, cells)


def _interval_pmf(edges: np.ndarray, width: int) -> np.ndarray:
    """P(edges[j] <= draw < edges[j + 1]) of a `width`-bit uniform draw: counted, not integrated."""
    return np.diff(_cells_below(edges, width)) / (1 << width)


def _zipf_rank_pmf(k: int, width: int) -> np.ndarray:
    """The pmf of zipf_rank(k) over a `width`-bit draw u: rank >= r exactly when u >= ln(r + 1) / ln(k + 1),
    so P(rank = r) is about ln((r + 2) / (r + 1)) / ln(k + 1), here counted over the draw's values."""
    return _interval_pmf(np.log(np.arange(1, k + 2)) / math.log(k + 1.0), width)


def item_exposure(model: EcommerceModel, day: int) -> np.ndarray:
    """P(an impression on `day` shows item index i) for each i of that day's catalogue (index = rank *
    categories + category; ranks from items_per_category on are the items born on days 1..day), from
    impression()'s own draws: the category, and independently a new item (born on a uniform day, at a
    uniform place in its cohort) or a Zipf rank among the day-0 items. The draws are counted over their
    hash bits, so this is the exact distribution the generator samples, which sums to 1."""
    k0, kn = model.items_per_category, model.new_items_per_category_per_day
    new = 0.0
    if day > 0:
        new = float(_interval_pmf(np.array([0.0, model.new_entity_rate]), _NEW_ITEM_BITS[1])[0])
    ranks = (1 - new) * _zipf_rank_pmf(k0, _RANK_BITS[1])
    if day > 0:
        born = _interval_pmf(np.arange(day + 1) / day, _BORN_BITS[1])
        place = _interval_pmf(np.arange(kn + 1) / kn, _RANK_BITS[1])
        ranks = np.concatenate([ranks, new * np.outer(born, place).ravel()])
    return np.outer(ranks, _zipf_rank_pmf(model.categories, _CATEGORY_BITS[1])).ravel()


def _lookup(values: list[float], index: str) -> str:
    """values[index] from a literal array (one constant)."""
    return f"element_at(array({', '.join(map(_d, values))}), CAST({index} AS INT) + 1)"


class _Draws:
    """The generator's columns as Spark SQL, stage by stage: each stage materializes what the next
    reads many times (one SQL string per column: no per-operator Python calls to build the plan)."""

    def __init__(self, model: EcommerceModel) -> None:
        self.m = model
        # Per dimension, each category's centroid coordinate: small literals, indexed by category.
        self.centroid_dims = [list(column) for column in zip(*model.centroids)]
        self.flat_category_device = [x for row in model.category_device for x in row]
        centroids = np.array(model.centroids)
        self.flat_gram = (centroids @ centroids.T).round(4).ravel().tolist()

    def entity_hash(self, salt: int, *keys: str) -> str:
        return f"xxhash64({self.m.seed + salt}L, {', '.join(keys)})"

    def impression(self) -> dict[str, str]:
        """Who saw what, when and on which device, from the row's hashes."""
        m = self.m
        h = "h_user"
        new_user = f"(day > 0 AND {uniform(h, 0, 16)} < {_d(m.new_entity_rate)})"
        power = _d(1.0 / (1.0 - m.user_activity_exponent))
        active = f"floor({m.users} * pow({uniform(h, 16, 32)}, {power}))"
        born = f"(floor({uniform(h, 48, 8)} * day) + 1)"  # a new user's first day: 1..day
        cohort = m.new_users_per_day
        newcomer = f"({m.users} + ({born} - 1) * {cohort} + floor({uniform(h, 16, 32)} * {cohort}))"
        h = "h_item"
        category = zipf_rank(uniform(h, *_CATEGORY_BITS), m.categories)
        new_item = f"(day > 0 AND {uniform(h, *_NEW_ITEM_BITS)} < {_d(m.new_entity_rate)})"
        k0, kn = m.items_per_category, m.new_items_per_category_per_day
        born = f"(floor({uniform(h, *_BORN_BITS)} * day) + 1)"
        fresh = f"({k0} + ({born} - 1) * {kn} + floor({uniform(h, *_RANK_BITS)} * {kn}))"
        rank = f"(CASE WHEN {new_item} THEN {fresh} ELSE {zipf_rank(uniform(h, *_RANK_BITS), k0)} END)"
        h = "h_context"
        bounds = np.cumsum(DEVICE_SHARES)[:-1]
        device = " ".join(f"WHEN {uniform(h, 12, 12)} < {_d(b)} THEN {i}" for i, b in enumerate(bounds))
        return {
            "user": f"CAST(CASE WHEN {new_user} THEN {newcomer} ELSE {active} END AS BIGINT)",
            "category": f"CAST({category} AS INT)",
            "item": f"CAST({rank} * {m.categories} + {category} AS BIGINT)",
            "hour": f"CAST(floor(24 * {uniform(h, 0, 12)}) AS INT)",
            "device": f"CASE {device} ELSE {len(DEVICES) - 1} END",
            "price_missing": f"{uniform(h, 24, 12)} < {_d(m.price_missing_rate)}",
            # As the Criteo generator's label_draw: 53 bits of the label's hash.
            "label_draw": f"shiftrightunsigned(h_label, 11) / {_d(1 << 53)}",
        }

    def user_hashes(self) -> dict[str, str]:
        """Hashes of the user and of each slot of the user's recent list on this day."""
        slots = {
            f"h_slot_{j}": self.entity_hash(5, "user", f"{HISTORY_SHIFT} * day - {j}")
            for j in range(self.m.history_length)
        }
        return {
            "h_favourites": self.entity_hash(1, "user"),
            "h_user_factor": self.entity_hash(2, "user"),
            **slots,
        }

    def item_hashes(self) -> dict[str, str]:
        return {
            "h_item_factor": self.entity_hash(3, "item"),
            "h_item_attributes": self.entity_hash(4, "item"),
        }

    def user_draws(self) -> dict[str, str]:
        """The user's favourite categories and list length."""
        m = self.m
        h = "h_favourites"
        draws = {
            f"favourite_{i}": f"CAST(floor({m.categories} * {uniform(h, 12 * i, 12)}) AS INT)"
            for i in range(FAVOURITES)
        }
        draws["history_length"] = f"CAST(floor({m.history_length + 1} * {uniform(h, 36, 12)}) AS INT)"
        return draws

    def item_draws(self) -> dict[str, str]:
        """The item's brand, effect, price and factor."""
        m = self.m
        h = "h_item_attributes"
        bpc = m.brands_per_category
        draws = {"brand": f"category * {bpc} + CAST(floor({bpc} * {uniform(h, 12, 8)}) AS INT)"}
        # The item's own effect, and popular items (low rank in their category) clicked more.
        popularity = f"ln(1 + floor(item / {m.categories}))"
        draws["t_item"] = f"{centered(h, 0, 12)} - {_d(ITEM_POPULARITY_WEIGHT)} * {popularity}"
        # Irwin-Hall: three uniforms, rescaled, are a near-normal draw (sd 1).
        draws["z_price"] = (
            f"({sql_sum([uniform(h, 20 + 12 * t, 12) for t in range(3)])} - {_d(1.5)}) * {_d(2.0)}"
        )
        draws.update(
            {f"item_v{d}": self.item_factor(d, "category", "h_item_factor") for d in range(m.latent_dim)}
        )
        return draws

    def item_factor(self, d: int, category: str, hashed: str) -> str:
        """Dimension d of an item's factor v = p * centroid[category] + q * noise."""
        p, q = math.sqrt(ITEM_CATEGORY_SHARE), math.sqrt(1 - ITEM_CATEGORY_SHARE)
        centroid = _lookup(self.centroid_dims[d], category)
        return f"({_d(p)} * {centroid} + {_d(q)} * {centered(hashed, 8 * d, 8)})"

    def history(self) -> dict[str, str]:
        """The user's factor and the recent items of its list (null past its length)."""
        m = self.m
        a, b = math.sqrt(USER_FAVOURITE_SHARE / FAVOURITES), math.sqrt(1 - USER_FAVOURITE_SHARE)
        columns = {}
        for d in range(m.latent_dim):
            centroids = sql_sum([_lookup(self.centroid_dims[d], f"favourite_{i}") for i in range(FAVOURITES)])
            columns[f"user_v{d}"] = (
                f"({_d(a)} * {centroids} + {_d(b)} * {centered('h_user_factor', 8 * d, 8)})"
            )
        favourites = f"array({', '.join(f'favourite_{i}' for i in range(FAVOURITES))})"
        for j in range(m.history_length):
            h = f"h_slot_{j}"
            favourite = f"element_at({favourites}, CAST(floor({FAVOURITES} * {uniform(h, 8, 8)}) AS INT) + 1)"
            explore = f"{uniform(h, 0, 8)} < {_d(EXPLORE_RATE)}"
            category = (
                f"CASE WHEN {explore} THEN floor({m.categories} * {uniform(h, 16, 12)}) ELSE {favourite} END"
            )
            rank = zipf_rank(uniform(h, 28, 24), m.items_per_category)
            item = f"{rank} * {m.categories} + {category}"
            columns[f"recent_{j}"] = f"CAST(CASE WHEN history_length > {j} THEN {item} END AS BIGINT)"
        return columns

    def gram(self) -> str:
        """The categories' Gram matrix, one literal (added beside the terms: never carried through a join)."""
        return f"array({', '.join(map(_d, self.flat_gram))})"

    def history_similarity(self) -> str:
        """mean_j E<v_item, v_recent_j>: over the item noise, p^2 <centroid[c], centroid[c_j]> plus
        q^2 * latent_dim when r_j is the item itself (0 for an empty list). One lookup per recent item in
        the categories' Gram matrix (the column `gram`, written once in the SQL), where the factors
        themselves would take latent_dim each."""
        m = self.m
        p2, q2 = ITEM_CATEGORY_SHARE, 1 - ITEM_CATEGORY_SHARE
        # An explicit CASE, not coalesce: Spark 4.0.1's generated code reads element_at of a literal
        # array at a null index as its last element, not as null.
        parts = []
        for j in range(m.history_length):
            categories = (
                f"element_at(gram, CAST(category * {m.categories} + recent_{j} % {m.categories} AS INT) + 1)"
            )
            same_item = f"CASE WHEN recent_{j} = item THEN {_d(q2 * m.latent_dim)} ELSE {_d(0.0)} END"
            parts.append(
                f"CASE WHEN recent_{j} IS NULL THEN {_d(0.0)} ELSE {_d(p2)} * {categories} + {same_item} END"
            )
        return f"{sql_sum(parts)} / greatest(history_length, 1)"

    def terms(self) -> dict[str, str]:
        """Each logit term before its scale."""
        k = self.m.latent_dim
        return {
            "t_item": "t_item",
            "t_brand": centered(self.entity_hash(6, "brand"), 0, 12),
            "t_category_device": _lookup(self.flat_category_device, f"category * {len(DEVICES)} + device"),
            "t_price": "-z_price",
            "t_hour": f"cos((hour - 20) * {_d(2 * math.pi / 24)})",
            "t_user_item": sql_sum([f"user_v{d} * item_v{d}" for d in range(k)]),
            "t_history": self.history_similarity(),
        }


def _stage(frame: DataFrame, columns: dict[str, str], keep: list[str]) -> DataFrame:
    return frame.selectExpr(*keep, *[f"{sql} AS {name}" for name, sql in columns.items()])


def _frame(
    spark: SparkSession, model: EcommerceModel, rows_per_day: int, rows: int, partitions: int
) -> DataFrame:
    """Draws for global rows 0..rows-1 (day = row // rows_per_day): the impression, its entities, the
    label's uniform draw and each logit term unscaled (t_<term>)."""
    draws = _Draws(model)
    keyed = spark.range(0, rows, 1, partitions).selectExpr(
        "id", f"CAST(floor(id / {rows_per_day}) AS INT) AS day"
    )
    hashed = _stage(keyed, {"row_hash": f"xxhash64({model.seed}L, day, id % {rows_per_day})"}, ["day"])
    row_draws = ("h_user", "h_item", "h_context", "h_label")
    hashed = _stage(hashed, {n: f"xxhash64(row_hash, {j})" for j, n in enumerate(row_draws)}, ["day"])
    impressions = _stage(hashed, draws.impression(), ["day"])
    base = impressions.columns
    entities = user_day_columns(item_columns(impressions, model), model)
    recents = [f"recent_{j}" for j in range(model.history_length)]
    return _with_terms(entities, draws, [*base, "brand", "z_price", *recents])


def _with_terms(frame: DataFrame, draws: _Draws, keep: list[str]) -> DataFrame:
    """`keep` and each logit term before its scale (t_<term>)."""
    terms = draws.terms()
    with_gram = _stage(frame, {"gram": draws.gram()}, frame.columns)
    return _stage(with_gram, terms, [c for c in keep if c not in terms])


def item_columns(frame: DataFrame, model: EcommerceModel) -> DataFrame:
    """`frame` (a generator item index `item` and its `category`) with what the logit terms read of the
    item: brand, t_item, z_price and item_v<d>."""
    draws = _Draws(model)
    hashed = _stage(frame, draws.item_hashes(), frame.columns)
    return _stage(hashed, draws.item_draws(), frame.columns)


def user_day_columns(frame: DataFrame, model: EcommerceModel) -> DataFrame:
    """`frame` (a generator user index `user` and a `day`) with what the logit terms read of the user
    on that day: user_v<d> and the recent list (recent_<j>, history_length)."""
    draws = _Draws(model)
    keep = frame.columns
    slots = [f"h_slot_{j}" for j in range(model.history_length)]
    drawn = _stage(
        _stage(frame, draws.user_hashes(), keep), draws.user_draws(), [*keep, "h_user_factor", *slots]
    )
    return _stage(drawn, draws.history(), [*keep, "history_length"])


def planted_logits(frame: DataFrame, model: EcommerceModel) -> DataFrame:
    """The planted `logit` (and `first_order_logit`) of impressions given as item_columns and
    user_day_columns beside the impression's `day`, `hour` and `device` indices: the generator's own
    terms, so any (user, item, context) is scored as a generated line would be."""
    return _scored(_with_terms(frame, _Draws(model), frame.columns), model)


def _scored(frame: DataFrame, model: EcommerceModel) -> DataFrame:
    """The frame with its planted logit and its first-order part (each term centred and scaled)."""
    scaled = {
        name: f"{_d(model.term_scales[name])} * (t_{name} - {_d(model.term_means[name])})" for name in SHARES
    }
    first_order = sql_sum([_d(model.bias), *[scaled[name] for name in FIRST_ORDER]])
    second_order = sql_sum([scaled[name] for name in SHARES if name not in FIRST_ORDER])
    return _stage(frame, {"first_order_logit": first_order}, frame.columns).selectExpr(
        "*", f"first_order_logit + {second_order} AS logit"
    )


def planted_model(spark: SparkSession, config: EcommerceConfig) -> EcommerceModel:
    """The config's planted model: each term scaled to its share of logit_scale**2 (on day 0's first
    rows), and the bias calibrated there to the requested positive rate."""
    model = EcommerceModel.from_config(config)
    sample_rows = min(config.rows_per_day, _CALIBRATION_ROWS)
    terms = [f"t_{name}" for name in SHARES]
    sample = _frame(spark, model, config.rows_per_day, sample_rows, 2).select(*terms).toPandas()
    means = {name: round(float(sample[f"t_{name}"].mean()), 6) for name in SHARES}
    scales = {
        name: round(config.logit_scale * math.sqrt(share) / max(float(sample[f"t_{name}"].std()), 1e-9), 6)
        for name, share in SHARES.items()
    }
    logits = sum(scales[name] * (sample[f"t_{name}"].to_numpy() - means[name]) for name in SHARES)
    low, high = -20.0, 20.0
    for _ in range(60):
        bias = (low + high) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(logits + bias)))))
        low, high = (bias, high) if rate < config.positive_rate else (low, bias)
    return EcommerceModel(
        **{**asdict(model), "term_means": means, "term_scales": scales, "bias": round(bias, 6)}
    )


def _raw_lines(frame: DataFrame, model: EcommerceModel) -> DataFrame:
    """The scored frame's TSV line of every row, in the ecommerce definition's column order, beside
    what the oracle reads (day, label_draw, logit, first_order_logit)."""
    price = (
        f"round(exp({_lookup(model.price_log_mu, 'category')} + {_d(model.price_log_sigma)} * z_price), 2)"
    )
    recent = [f"concat('{ITEM_PREFIX}', CAST(recent_{j} AS STRING))" for j in range(model.history_length)]
    separator = DATASET.column("recent_items").list_separator
    fields = {
        DATASET.label: "CAST(CAST(label_draw < 1 / (1 + exp(-logit)) AS INT) AS STRING)",
        "user_id": f"concat('{USER_PREFIX}', CAST(user AS STRING))",
        "item_id": f"concat('{ITEM_PREFIX}', CAST(item AS STRING))",
        "category": "concat('c', CAST(category AS STRING))",
        "brand": "concat('b', CAST(brand AS STRING))",
        "price": f"CASE WHEN price_missing THEN '' ELSE CAST({price} AS STRING) END",
        "hour": "CAST(hour AS STRING)",
        "device": f"element_at(array({', '.join(repr(d) for d in DEVICES)}), device + 1)",
        "recent_items": f"concat_ws({separator!r}, {', '.join(recent)})" if recent else "''",
    }
    if list(fields) != DATASET.names:
        raise AssertionError(f"the generator writes {list(fields)}, the definition reads {DATASET.names}")
    line = f"concat_ws({DATASET.separator!r}, {', '.join(fields.values())}) AS value"
    return frame.selectExpr("day", "label_draw", "logit", "first_order_logit", line)


def field_indices(model: EcommerceModel) -> dict[str, dict[str, str]]:
    """The inverse of _raw_lines for the raw fields that place an impression in the planted model (with
    its day): per field, SQL of the generator's indices from the field's value (a column of the field's
    name); null where a value is not one the generator writes."""
    item = f"TRY_CAST(regexp_extract(item_id, '^{ITEM_PREFIX}([0-9]+)$', 1) AS BIGINT)"
    devices = f"array({', '.join(repr(d) for d in DEVICES)})"
    return {
        "user_id": {"user": f"TRY_CAST(regexp_extract(user_id, '^{USER_PREFIX}([0-9]+)$', 1) AS BIGINT)"},
        "item_id": {"item": item, "category": f"CAST({item} % {model.categories} AS INT)"},
        "hour": {"hour": "TRY_CAST(hour AS INT)"},
        "device": {"device": f"CAST(nullif(array_position({devices}, device), 0) - 1 AS INT)"},
    }


def generate_ecommerce(
    spark: SparkSession, out: str, config: EcommerceConfig, sql_conf: dict[str, str] | None = None
) -> dict:
    """Writes the raw files, the oracle table and the planted model; returns the report section.

    One Spark partition is one output file: partition p holds day p // files_per_day, so a line's
    number in its file is its index in the partition, for the raw files and the oracle alike."""
    with session_conf(spark, WIDE_PROJECTIONS if sql_conf is None else sql_conf):
        started = time.perf_counter()
        model = planted_model(spark, config)
        progress(f"terms scaled and bias calibrated to a {config.positive_rate:.0%} positive rate", started)
        rows = config.days * config.rows_per_day
        frame = _frame(spark, model, config.rows_per_day, rows, config.days * config.files_per_day)
        # Drawn once: the raw files and the oracle read the same cached partitions (a partition keeps
        # its index and row order in the cache, so line numbers stay those of the files).
        lines = _raw_lines(_scored(frame, model), model).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            oracle = oracle_rows(lines, config)
            return write_outputs(spark, out, config, lines.select("value"), oracle, model.to_json(), started)
        finally:
            lines.unpersist()


def main(argv: list[str] | None = None) -> dict:
    args, config = parse_generator_args(argv, "sparkrec generate-ecommerce", __doc__, EcommerceConfig)
    spark = build_session(args.profile, "sparkrec-generate-ecommerce")
    report = generate_ecommerce(spark, args.out, config)
    print(json.dumps({"generate_ecommerce": report}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main, "sparkrec generate-ecommerce")
