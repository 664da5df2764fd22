"""Pipeline configuration: YAML -> JSON-Schema validation -> frozen dataclasses.

One config file (config/config.yaml, config/paper.yaml) describes a whole study. Top-level
`model:` and `train:` hold the defaults; each entry of `experiments:` (a grid id such as
`mamba2` or `hades_no_balance`) overrides them. An ablation is a new entry, never a new flag.

Every default lives in one dataclass here: ModelConfig and TrainConfig for the experiments,
DataConfig (with SyntheticConfig and HFDatasetConfig), EvalConfig, PasskeyConfig,
AnalysisConfig and ResourcesConfig for the other sections; call sites read their fields
(`cfg.eval.max_length`), never `.get(key, default)`. What rule params hash and what outputs
record is the section as the file wrote it (`Config.raw_section`), so a default changed here
reruns nothing by itself.

Errors name the offending key and the file, e.g.
    config/config.yaml: experiments.hades.model.n_shared: 16 is not valid under ...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from hades.archs import ARCHS
from hades.io import sha256_bytes

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


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


class _Section:
    """A typed config section: its fields and their defaults, read from the section's mapping.
    `section["key"]` reads a field by its config key, as a mapping would."""

    _nested: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str | None = None):
        """The section from its mapping (None: all defaults). Unknown or missing keys and the
        checks of `check` are ConfigErrors naming `where` and the key."""
        where = where or cls._where
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:  # the schema should have caught this; keep the dataclass honest too
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        for name, f in fields.items():
            if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}.{name}: required")
        for k, v in values.items():
            if k in cls._nested and v is not None:
                values[k] = cls._nested[k].from_mapping(v, f"{where}.{k}")
            elif isinstance(v, list):
                values[k] = tuple(v)
        section = cls(**values)
        section.check(where)
        return section

    def check(self, where: str) -> None:
        """Semantic checks the schema cannot express."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class SyntheticConfig(_Section):
    """data.synthetic: the seeded toy language of hades/data/synthetic.py."""

    _where: ClassVar[str] = "data.synthetic"

    n_docs: int = 4000  # training documents (the held-out ones are data.val_docs more)
    n_words: int = 600  # open-class vocabulary of the generated language
    zipf_exponent: float = 1.1
    recall_fraction: float = 0.3
    doc_words: tuple[int, int] = (40, 220)  # words per document, uniform in [lo, hi]

    def check(self, where: str) -> None:
        lo, hi = self.doc_words
        if not 0 < lo <= hi:
            raise ConfigError(f"{where}.doc_words: must be [lo, hi] with 0 < lo <= hi, got {list(self.doc_words)}")
        if self.n_words < 40:
            raise ConfigError(f"{where}.n_words: must be >= 40, got {self.n_words}")


@dataclass(frozen=True)
class HFDatasetConfig(_Section):
    """data.hf_dataset: `datasets.load_dataset(path, name=..., split=..., data_files=...)`."""

    _where: ClassVar[str] = "data.hf_dataset"

    path: str
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    data_files: str | tuple[str, ...] | None = None
    streaming: bool = True
    max_docs: int | None = None  # None: the whole split


@dataclass(frozen=True)
class DataConfig(_Section):
    """data: where the corpus comes from (hades/data/corpus.py) and how it is sharded."""

    _where: ClassVar[str] = "data"
    _nested: ClassVar[dict[str, type]] = {"synthetic": SyntheticConfig, "hf_dataset": HFDatasetConfig}

    source: str  # synthetic | text_files | hf_dataset
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    text_files: tuple[str, ...] = ()
    hf_dataset: HFDatasetConfig | None = None
    val_docs: int = 200  # held-out documents
    num_shards: int = 1  # train token shards (one tokenize_shard job each)
    max_train_tokens: int | None = None  # None: the whole corpus


@dataclass(frozen=True)
class EvalConfig(_Section):
    """eval: the lm-eval tasks and their settings (hades/eval/harness.py)."""

    _where: ClassVar[str] = "eval"

    tasks: tuple[str, ...] = ()
    local_data: Mapping[str, str] = field(default_factory=dict)  # task -> prepared local data
    sources: Mapping[str, str] = field(default_factory=dict)  # task -> a benchmark release file
    batch_size: int = 8
    max_length: int = 2048
    limit: int | None = None  # None: every document
    offline: bool = False


@dataclass(frozen=True)
class PasskeyConfig(_Section):
    """passkey: the retrieval grid (hades/eval/passkey.py); the defaults are the paper's
    (docs/paper.md "Passkey retrieval"): 1K-16K tokens, depths 0-1 by 0.1, 10 trials."""

    _where: ClassVar[str] = "passkey"

    lengths: tuple[int, ...] = tuple(1024 * k for k in range(1, 17))
    depths: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
    trials: int = 10
    key_digits: int = 5
    max_length: int | None = None  # refuse lengths above this; None: no limit
    batch_size: int = 8
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalysisConfig(_Section):
    """analysis: the spectrum and Δ-histogram figures (hades/analysis)."""

    _where: ClassVar[str] = "analysis"

    models: tuple[str, ...] = ()
    layer: int | None = None  # 0-based; None: the middle layer
    sample_text: str | None = None  # analyse this text instead of held-out documents
    delta_docs: int = 25  # held-out documents for the Δ histogram
    delta_max_tokens: int = 38_000


@dataclass(frozen=True)
class ResourcesConfig(_Section):
    """resources: GPUs per job kind (the rules' `gpu` resource; 0 = CPU)."""

    _where: ClassVar[str] = "resources"

    gpus_per_train_job: int = 0
    gpus_per_eval_job: int = 0


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
    data: DataConfig
    tokenizer: Mapping[str, Any]
    experiments: Mapping[str, Experiment]
    eval: EvalConfig
    passkey: PasskeyConfig
    analysis: AnalysisConfig
    resources: ResourcesConfig
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

    def raw_section(self, name: str) -> Mapping[str, Any]:
        """A top-level section as the config wrote it, no defaults filled ({} when absent): what
        rule params hash and outputs record."""
        return self.raw.get(name, {})


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
    """Semantic checks the schema cannot express; messages name the key.

    The per-arch ones check fields only that arch reads (heads of head_dim, HADES's filter
    bank), so they sit with the fields here rather than on the mixer classes: they run where
    torch is not imported (the Snakefile, at parse time). An arch without such a rule needs
    no line here (smamba: its one, an even d_state, is asserted when its mixer is built)."""
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
    sections = {
        name: cls.from_mapping(raw.get(name), f"{source}: {name}")
        for name, cls in (("data", DataConfig), ("eval", EvalConfig), ("passkey", PasskeyConfig),
                          ("analysis", AnalysisConfig), ("resources", ResourcesConfig))
    }
    for section in ("passkey", "analysis"):
        for gid in sections[section].models:
            if gid not in experiments:
                raise ConfigError(f"{source}: {section}.models: unknown grid id {gid!r}")

    return Config(
        name=raw["name"],
        seed=raw["seed"],
        results_dir=raw.get("results_dir", "results"),
        tracking=raw.get("tracking", {}),
        tokenizer=raw["tokenizer"],
        experiments=experiments,
        **sections,
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
