"""The generator's planted ground truth: a known click model whose true probability is computed per row.

Every random quantity is a hash of (seed, row or category key), written as Spark SQL text, so
the generator runs on the executors with no Python UDF and is deterministic for a seed. The model:

    logit = bias + sum_j w_j[c_j] + sum_(a,b) <v_a[c_a], v_b[c_b]> * s2 / sqrt(k) + sum_i beta_i * x_i

with first-order category effects w, factorization-machine interactions between chosen field pairs,
and dense effects on x_i = log1p(max(I_i, 0)) - mu_i. Category frequencies are Zipf-like; later days
draw some values born after day 0 (drift).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rec_plugin.dataset import load_dataset
from rec_plugin.schema import Tags
from spark_jobs.draws import centered, sql_double, sql_sum, uniform, zipf_rank

# The raw columns it draws, by role, from Criteo's dataset definition (conf/datasets/criteo.json).
CRITEO = load_dataset("criteo")
LABEL = CRITEO.label
DENSE = CRITEO.tagged(Tags.CONTINUOUS)
CATEGORICAL = CRITEO.tagged(Tags.CATEGORICAL)
# category_token writes tokens of 8 lowercase hex digits: the definition's categorical columns say so.
TOKEN_WIDTH = 8
if {(CRITEO.column(c).token_width, CRITEO.column(c).alphabet) for c in CATEGORICAL} != {(TOKEN_WIDTH, "hex")}:
    raise ValueError("conf/datasets/criteo.json: the generator writes 8-digit hex categorical tokens")

_TOKEN_PRIME = 4_026_531_833
_TOKEN_MULTIPLIER = 1_103_515_245
_INT_MAX = 2**31 - 1
# category_token casts a long to binary, which Spark refuses in ANSI mode.
TOKEN_CONF = {"spark.sql.ansi.enabled": "false"}
# Shares of the logit's variance: first-order categories, pairwise interactions, dense features.
_FIRST_ORDER_SHARE, _INTERACTION_SHARE, _DENSE_SHARE = 0.40, 0.45, 0.15
# Criteo-like missing rates of its 13 integer and 26 categorical fields (share of rows with an empty field).
_DENSE_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.40, 0.22]
_CAT_MISSING = [0.0] * 12 + [0.03, 0.0, 0.0, 0.03] + [0.0] * 2 + [0.44] * 8
# As in Criteo, its second and ninth integer columns carry small negative values.
_NEGATIVE_OFFSET = [0, 3, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]


@dataclass(frozen=True)
class PlantedModel:
    """All parameters of the planted click model; derived from the seed, saved beside the data."""

    seed: int
    cardinalities: list[int]
    new_value_rate: float
    latent_dim: int
    pairs: list[tuple[int, int]]
    first_order_scale: float
    interaction_scale: float
    dense_mu: list[float]
    dense_sigma: list[float]
    dense_beta: list[float]
    dense_missing: list[float] = field(default_factory=lambda: list(_DENSE_MISSING))
    cat_missing: list[float] = field(default_factory=lambda: list(_CAT_MISSING))
    negative_offset: list[int] = field(default_factory=lambda: list(_NEGATIVE_OFFSET))
    bias: float = 0.0

    @classmethod
    def from_seed(
        cls,
        seed: int,
        max_cardinality: int,
        logit_scale: float,
        new_value_rate: float,
        latent_dim: int,
        num_pairs: int,
    ) -> PlantedModel:
        """Cardinalities from ~4 to max_cardinality (geometric, shuffled), pairs, scales and dense laws."""
        rng = np.random.default_rng(seed)
        steps = rng.permutation(len(CATEGORICAL)) / (len(CATEGORICAL) - 1)
        cardinalities = [max(4, round(4 * (max_cardinality / 4) ** s)) for s in steps]
        all_pairs = [(a, b) for a in range(len(CATEGORICAL)) for b in range(a + 1, len(CATEGORICAL))]
        chosen = rng.choice(len(all_pairs), size=num_pairs, replace=False)
        pairs = sorted(all_pairs[i] for i in chosen)
        dense_mu = rng.uniform(0.5, 4.0, len(DENSE)).round(3).tolist()
        dense_sigma = rng.uniform(0.8, 1.8, len(DENSE)).round(3).tolist()
        variance = logit_scale**2
        beta_size = math.sqrt(_DENSE_SHARE * variance / len(DENSE))
        signs = rng.choice([-1.0, 1.0], len(DENSE))
        dense_beta = [round(float(s) * beta_size / sd, 4) for s, sd in zip(signs, dense_sigma)]
        return cls(
            seed=seed,
            cardinalities=cardinalities,
            new_value_rate=new_value_rate,
            latent_dim=latent_dim,
            pairs=pairs,
            first_order_scale=math.sqrt(_FIRST_ORDER_SHARE * variance / len(CATEGORICAL)),
            interaction_scale=math.sqrt(_INTERACTION_SHARE * variance / num_pairs),
            dense_mu=dense_mu,
            dense_sigma=dense_sigma,
            dense_beta=dense_beta,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PlantedModel:
        values = json.loads(text)
        values["pairs"] = [tuple(p) for p in values["pairs"]]
        return cls(**values)

    @staticmethod
    def field_hashes(row_hash: str) -> dict[str, str]:
        """Per raw field (and the label): a 64-bit hash whose bits are that field's draws for the row.

        Materialize these as columns before category_ids/dense_values read them, so that each is
        computed once per row rather than once per place that reads it."""
        return {name: f"xxhash64({row_hash}, {j})" for j, name in enumerate([*CATEGORICAL, *DENSE, LABEL])}

    def category_ids(self, day: str, field_hash: dict[str, str]) -> dict[str, str]:
        """Per field: the category's integer id for this row (null = missing)."""
        ids = {}
        for j, name in enumerate(CATEGORICAL):
            h = field_hash[name]
            k = self.cardinalities[j]
            rank = zipf_rank(uniform(h, 0, 32), k)
            birth_day = f"(floor({uniform(h, 56, 8)} * {day}) + 1)"
            is_new = f"({day} > 0 AND {uniform(h, 44, 12)} < {sql_double(self.new_value_rate)})"
            value = f"CASE WHEN {is_new} THEN {birth_day} * {k} + {rank} ELSE {rank} END"
            missing = f"{uniform(h, 32, 12)} < {sql_double(self.cat_missing[j])}"
            ids[name] = f"CAST(CASE WHEN {missing} THEN NULL ELSE {value} END AS BIGINT)"
        return ids

    def dense_values(self, field_hash: dict[str, str]) -> dict[str, str]:
        """Per dense field: a heavy-tailed (log-normal) count, with negatives and missing as in Criteo."""
        values = {}
        for i, name in enumerate(DENSE):
            h = field_hash[name]
            # Irwin-Hall: the sum of four uniforms, rescaled, is a near-normal draw with no log or cos.
            four = sql_sum([uniform(h, 12 * t, 12) for t in range(4)])
            normal = f"(({four} - {sql_double(2.0)}) * {sql_double(math.sqrt(3.0))})"
            mu, sigma = sql_double(self.dense_mu[i]), sql_double(self.dense_sigma[i])
            count = f"floor(exp({mu} + {sigma} * {normal}) - {sql_double(1.0)})"
            value = f"least({count}, {_INT_MAX}) - {self.negative_offset[i]}"
            missing = f"{uniform(h, 48, 16)} < {sql_double(self.dense_missing[i])}"
            values[name] = f"CAST(CASE WHEN {missing} THEN NULL ELSE {value} END AS INT)"
        return values

    def effect_hashes(self, ids: dict[str, str]) -> dict[str, str]:
        """Per field: a hash of (field, category id) whose bits are that category's effects (null if missing).

        Materialize these as columns before `logits`, so each is computed once per row."""
        return {
            name: f"CASE WHEN {ids[name]} IS NOT NULL THEN xxhash64({self.seed + 1}, {j}, {ids[name]}) END"
            for j, name in enumerate(CATEGORICAL)
        }

    def logits(self, effect_hash: dict[str, str], dense: dict[str, str]) -> tuple[str, str]:
        """(full logit, logit without the interactions) from the rows' effect hashes and dense values."""
        zero = sql_double(0.0)
        first_order = [
            f"coalesce({sql_double(self.first_order_scale)} * {centered(effect_hash[name], 0, 12)}, {zero})"
            for name in CATEGORICAL
        ]
        interaction = sql_sum([self._pair_term(effect_hash, a, b) for a, b in self.pairs])
        dense_term = [
            f"coalesce({sql_double(self.dense_beta[i])} * (log1p(greatest({dense[name]}, 0))"
            f" - {sql_double(self.dense_mu[i])}), {zero})"
            for i, name in enumerate(DENSE)
        ]
        base = f"(({sql_double(self.bias)} + {sql_sum(first_order)}) + {sql_sum(dense_term)})"
        return f"({base} + {interaction})", base

    def _pair_term(self, effect_hash: dict[str, str], a: int, b: int) -> str:
        ha, hb = effect_hash[CATEGORICAL[a]], effect_hash[CATEGORICAL[b]]
        offsets = [12 + 12 * t for t in range(self.latent_dim)]
        dot = sql_sum([f"{centered(ha, o, 12)} * {centered(hb, o, 12)}" for o in offsets])
        scale = sql_double(self.interaction_scale / math.sqrt(self.latent_dim))
        return f"coalesce({dot} * {scale}, {sql_double(0.0)})"


def category_token(field_index: int, category_id: str) -> str:
    """The 8-lowercase-hex-digit token of a category id.

    x -> (x * A + field) mod P for a prime P just below 0xF0000000 is a bijection on [0, P), so
    distinct ids (below P) never collide, and + 0x10000000 makes every token 8 digits long. The digits
    are built as the 8 ASCII bytes of one long and cast to a string (10M rows: 14 s where hex() and
    lower() took 20 s); casting a long to binary needs ANSI mode off (TOKEN_CONF)."""
    value = f"(({category_id} * {_TOKEN_MULTIPLIER} + {field_index * 7919}) % {_TOKEN_PRIME} + {0x10000000})"
    # Spread the 8 nibbles into the 8 bytes of a long, most significant first.
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F)):
        value = f"(({value} | shiftleft({value}, {shift})) & {mask})"
    # Per byte: 1 where the nibble is 10-15, i.e. a letter; '0' + n for digits, 'a' + n - 10 for letters.
    letters = f"shiftright(({value} + {0x0606060606060606}) & {0x1010101010101010}, 4)"
    ascii_bytes = f"({value} + {0x3030303030303030} + {letters} * {ord('a') - ord('0') - 10})"
    return f"CAST(CAST({ascii_bytes} AS BINARY) AS STRING)"


def label_draw(label_hash: str) -> str:
    """The uniform draw that decides a row's label: clicked when it falls below the true probability."""
    return f"(shiftrightunsigned({label_hash}, 11) / {sql_double(1 << 53)})"
