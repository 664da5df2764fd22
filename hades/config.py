"""Pipeline configuration: YAML -> JSON-Schema validation -> frozen dataclasses.

One config file (config/config.yaml, config/paper.yaml) describes a whole study. Top-level
`model:` and `train:` hold the defaults; each entry of `experiments:` (a grid id such as
`mamba2` or `hades_no_balance`) overrides them. An ablation is a new entry, never a new flag.

Errors name the offending key and the file, e.g.
    config/config.yaml: experiments.hades.model.n_shared: 16 is not valid under ...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hades.io import sha256_bytes

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"

ARCHS = ("linear_attn", "retnet", "deltanet", "mamba", "mamba2", "hades", "smamba")


class ConfigError(ValueError):
    """A config that fails validation. The message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyperparameters; the paper symbol is in the comment where there is one."""

    arch: str = "mamba2"
    d_model: int = 1024  # D
    n_layer: int = 48
    vocab_size: int | None = None  # None: filled from the tokenizer
    pad_vocab_multiple: int = 16
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    mlp_ratio: float = 0.0  # hidden = mlp_ratio * D (SwiGLU, 2/3 rule); 0 = no MLP block
    num_heads: int = 4  # attention-style mixers (linear_attn, retnet, deltanet)
    head_dim: int = 64  # P
    d_state: int = 128  # N
    expand: int = 2
    d_conv: int = 4
    n_groups: int = 1  # G
    dt_rank: int | None = None  # Mamba (S6): None = ceil(D / 16)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    n_active: int = 16  # H: filters active per token (HADES)
    n_shared: int = 8  # S: always-on shared filters
    lambda_balance: float = 1e-3  # λ1
    lambda_diversity: float = 1e-3  # λ2
    gamma_init: float = 0.25  # γ
    chunk_size: int = 64
    kernel: str = "auto"
    # Sparse Mamba (smamba): which canonical form A takes, and whether its roots are kept in the
    # open left half-plane (false = the paper's unconstrained companion coefficients)
    smamba_form: str = "controllable"
    smamba_stable: bool = True
    # the eigenbasis scan's working precision: float64 by default, since moving into and out of
    # A's eigenbasis amplifies rounding by its condition number (~8e6 at init with N = 16): in
    # float32 the gradients of A's parameters are off by ~5e-2 (docs/smamba.md "Precision")
    smamba_scan_dtype: str = "float64"

    @property
    def n_filters(self) -> int:
        """M: filters in the HADES bank (= Mamba2's head count at the same width)."""
        return self.expand * self.d_model // self.head_dim

    @property
    def n_experts(self) -> int:
        """Q: routed slots per token."""
        return self.n_active - self.n_shared

    @property
    def n_candidates(self) -> int:
        """E: filters the router chooses the Q experts from."""
        return self.n_filters - self.n_shared

    @property
    def padded_vocab_size(self) -> int:
        assert self.vocab_size is not None, "vocab_size must be set (from the tokenizer) before building a model"
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    seq_len: int = 256
    global_batch: int = 16
    micro_batch: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    num_threads: int = 0
    compile: bool = False
    # capture each micro-batch's forward + backward as a CUDA graph (hades/train/graph.py):
    # "auto" = on a single CUDA process (falls back to eager if the capture fails), true = must
    cuda_graph: bool | str = "auto"
    # validation loss (mean next-token CE over the first eval_windows windows of seq_len tokens of
    # the val split, the same windows every time) every eval_every steps and at the end; 0 = off
    eval_every: int = 0
    eval_windows: int = 16


@dataclass(frozen=True)
class Experiment:
    """One grid entry: a named model + training recipe."""

    id: str
    label: str
    table: int | None
    paper_key: str | None
    seed: int
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class Config:
    name: str
    seed: int
    results_dir: str
    tracking: Mapping[str, Any]
    data: Mapping[str, Any]
    tokenizer: Mapping[str, Any]
    experiments: Mapping[str, Experiment]
    eval: Mapping[str, Any]
    passkey: Mapping[str, Any]
    analysis: Mapping[str, Any]
    resources: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    source: str = "<dict>"

    @property
    def tracking_uri(self) -> str:
        uri = self.tracking.get("uri")
        return uri or f"sqlite:///{Path(self.results_dir).resolve() / 'mlflow.db'}"

    @property
    def tracking_experiment(self) -> str:
        return self.tracking.get("experiment") or f"hades-{self.name}"

    def experiment(self, grid_id: str) -> Experiment:
        if grid_id not in self.experiments:
            raise ConfigError(
                f"{self.source}: unknown grid id {grid_id!r}; known: {', '.join(self.experiments)}"
            )
        return self.experiments[grid_id]

    def hash(self) -> str:
        return config_hash(self.raw)


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return sha256_bytes(blob)[:12]


# a byte-level BPE starts from the 256 byte tokens plus <|endoftext|> (hades.data.tokenizer);
# below one merge more it is no BPE at all, and tokenizers' trainer would drop bytes instead
BPE_MIN_VOCAB = 258


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error:
    safe_load keeps the last one silently, so a second `train:` block would replace the first."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat keys on purpose
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):  # construct_mapping reports it
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path, source: str | None = None) -> Any:
    """Parse a config file; a YAML error or a duplicate key is a ConfigError naming the file,
    line and column."""
    source = source or str(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_StrictLoader)
    except FileNotFoundError as e:
        raise ConfigError(f"{source}: no such config file") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}:{where}: malformed YAML: {what}") from e


def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(raw: Any, source: str = "<dict>") -> None:
    """Validate against the JSON Schema; raise ConfigError naming file and key."""
    import jsonschema

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for e in errors[:10]:
        if e.validator == "additionalProperties":
            known = sorted(e.schema.get("properties", {}))
            extra = sorted(set(e.instance) - set(known))
            where = _key_path(e.absolute_path)
            for k in extra:
                key = f"{where}.{k}" if e.absolute_path else k
                hint = f" (known keys: {', '.join(known)})" if known else ""
                lines.append(f"{source}: unknown key {key!r}{hint}")
        else:
            lines.append(f"{source}: {_key_path(e.absolute_path)}: {e.message}")
    raise ConfigError("\n".join(lines))


def _dataclass_from(cls, values: Mapping[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:  # the schema should have caught this; keep the dataclass honest too
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    kw = dict(values)
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return cls(**kw)


def check_model(m: ModelConfig, where: str) -> None:
    """Semantic checks the schema cannot express; messages name the key."""
    if m.arch not in ARCHS:
        raise ConfigError(f"{where}.arch: unknown architecture {m.arch!r}; known: {', '.join(ARCHS)}")
    if m.arch in ("mamba2", "hades"):
        if (m.expand * m.d_model) % m.head_dim:
            raise ConfigError(
                f"{where}.head_dim: {m.head_dim} does not divide expand*d_model = {m.expand * m.d_model}"
            )
    if m.arch in ("linear_attn", "retnet", "deltanet") and m.d_model % m.num_heads:
        raise ConfigError(f"{where}.num_heads: {m.num_heads} does not divide d_model = {m.d_model}")
    if m.arch == "hades":
        if m.n_shared > m.n_active:
            raise ConfigError(f"{where}.n_shared: S={m.n_shared} exceeds n_active H={m.n_active}")
        if m.n_active > m.n_filters:
            raise ConfigError(
                f"{where}.n_active: H={m.n_active} exceeds the bank size M = expand*d_model/head_dim = {m.n_filters}"
            )
        if m.n_experts > 0 and m.n_experts > m.n_candidates:
            raise ConfigError(
                f"{where}.n_active: H-S={m.n_experts} experts but only M-S={m.n_candidates} candidates"
            )
    if m.dt_min > m.dt_max:
        raise ConfigError(f"{where}.dt_min: {m.dt_min} > dt_max {m.dt_max}")


def check_top_level(raw: Mapping[str, Any], source: str) -> None:
    """Semantic checks of the sections outside the experiments; messages name file and key."""
    if "results_dir" in raw and not raw["results_dir"].strip():
        raise ConfigError(
            f"{source}: results_dir: {raw['results_dir']!r} is empty (every output would go under /); "
            "name a directory, or drop the key for the default `results`"
        )
    tok = raw["tokenizer"]
    if tok["kind"] == "train_bpe":
        if "vocab_size" not in tok:
            raise ConfigError(f"{source}: tokenizer.vocab_size: required for kind train_bpe")
        if tok["vocab_size"] < BPE_MIN_VOCAB:
            raise ConfigError(
                f"{source}: tokenizer.vocab_size: {tok['vocab_size']} is too small for a byte-level BPE, which "
                f"holds the 256 byte tokens and <|endoftext|> before any merge: at least {BPE_MIN_VOCAB}"
            )


def load_config(src: str | Path | Mapping[str, Any], source: str | None = None) -> Config:
    """Load, validate and resolve a pipeline config.

    `src` is a YAML path or an already-parsed mapping (Snakemake's `config`).
    """
    if isinstance(src, (str, Path)):
        source = source or str(src)
        raw = read_yaml(src, source)
    else:
        raw = dict(src)
        source = source or "<config>"
    validate(raw, source)
    check_top_level(raw, source)

    model_defaults = raw.get("model", {})
    train_defaults = raw.get("train", {})
    experiments: dict[str, Experiment] = {}
    for gid, spec in raw["experiments"].items():
        where = f"{source}: experiments.{gid}"
        model = _dataclass_from(ModelConfig, {**model_defaults, **spec.get("model", {})}, where + ".model")
        check_model(model, where + ".model")
        train = _dataclass_from(TrainConfig, {**train_defaults, **spec.get("train", {})}, where + ".train")
        if train.global_batch % train.micro_batch:
            raise ConfigError(
                f"{where}.train.micro_batch: {train.micro_batch} does not divide global_batch {train.global_batch}"
            )
        experiments[gid] = Experiment(
            id=gid,
            label=spec.get("label", gid),
            table=spec.get("table"),
            paper_key=spec.get("paper_key"),
            seed=spec.get("seed", raw["seed"]),
            model=model,
            train=train,
        )
    for section in ("passkey", "analysis"):
        for gid in raw.get(section, {}).get("models", []):
            if gid not in experiments:
                raise ConfigError(f"{source}: {section}.models: unknown grid id {gid!r}")

    return Config(
        name=raw["name"],
        seed=raw["seed"],
        results_dir=raw.get("results_dir", "results"),
        tracking=raw.get("tracking", {}),
        data=raw["data"],
        tokenizer=raw["tokenizer"],
        experiments=experiments,
        eval=raw.get("eval", {}),
        passkey=raw.get("passkey", {}),
        analysis=raw.get("analysis", {}),
        resources=raw.get("resources", {}),
        raw=raw,
        source=source,
    )


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
