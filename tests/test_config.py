"""The typed config sections (hades.config): each default lives in one dataclass, call sites
read fields, rule params hash the section as written, and a bad key names the key and the file."""

from pathlib import Path

import pytest
import yaml

from hades.config import (
    AnalysisConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    PasskeyConfig,
    ResourcesConfig,
    SyntheticConfig,
    config_hash,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "config" / "config.yaml"


def _write(tmp_path, **changes) -> Path:
    raw = yaml.safe_load(TOY.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_omitted_sections_take_the_dataclass_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, eval=None, passkey=None, analysis=None, resources=None))
    assert cfg.eval == EvalConfig() and cfg.eval.max_length == 2048 and cfg.eval.batch_size == 8
    assert cfg.passkey == PasskeyConfig() and cfg.passkey.models == ()
    assert cfg.passkey.lengths == tuple(range(1024, 16385, 1024)), "the paper's 1K-16K"
    assert cfg.passkey.depths == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert (cfg.passkey.trials, cfg.passkey.key_digits) == (10, 5)
    assert cfg.analysis == AnalysisConfig() and (cfg.analysis.delta_docs, cfg.analysis.delta_max_tokens) == (25, 38_000)
    assert cfg.resources == ResourcesConfig() and cfg.resources.gpus_per_train_job == 0
    for name in ("eval", "passkey", "analysis", "resources"):
        assert cfg.raw_section(name) == {}, "the section as written: nothing was filled in"


def test_given_values_are_typed_fields(tmp_path):
    cfg = load_config(TOY)
    assert cfg.eval.tasks == ("toy_ppl", "toy_cloze") and cfg.eval.offline is True
    assert cfg.passkey.lengths == (256, 512) and cfg.passkey["models"] == ("mamba2", "hades")
    assert isinstance(cfg.data, DataConfig) and cfg.data.num_shards == 2
    assert cfg.data.synthetic == SyntheticConfig(n_docs=4000, n_words=600, zipf_exponent=1.1, recall_fraction=0.3,
                                                 doc_words=(40, 220))
    assert cfg.data.val_docs == 200 and cfg.data.max_train_tokens is None and cfg.data.hf_dataset is None
    paper = load_config(ROOT / "config" / "paper.yaml")
    assert paper.data.hf_dataset.path and paper.data.hf_dataset.text_field == "text"
    with pytest.raises(KeyError):
        cfg.passkey["no_such_key"]


def test_rule_params_hash_the_section_as_written():
    """cfg_hash (workflow/rules/common.smk) hashes raw_section: the typed defaults change no
    param, so upgrading this module reruns no job."""
    cfg = load_config(TOY)
    raw = yaml.safe_load(TOY.read_text())
    for name in ("data", "eval", "passkey", "analysis", "tracking", "tokenizer"):
        assert config_hash(cfg.raw_section(name)) == config_hash(raw.get(name, {})), name


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("passkey", {"trails": 3}, "unknown key 'passkey.trails'"),
        ("eval", {"max_lenght": 3}, "unknown key 'eval.max_lenght'"),
        ("analysis", {"models": ["nope"]}, "analysis.models: unknown grid id 'nope'"),
    ],
)
def test_a_bad_key_names_the_key_and_the_file(tmp_path, section, value, message):
    path = _write(tmp_path, **{section: value})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and message in str(e.value), e.value


def test_semantic_checks_of_a_section_name_the_key_and_the_file(tmp_path):
    raw = yaml.safe_load(TOY.read_text())
    raw["data"]["synthetic"]["doc_words"] = [50, 10]
    with pytest.raises(ConfigError, match=r"study.yaml: data.synthetic.doc_words: must be \[lo, hi\]"):
        load_config(raw, source="study.yaml")
    with pytest.raises(ConfigError, match="data.synthetic.n_words: must be >= 40"):
        SyntheticConfig.from_mapping({"n_words": 10})
    with pytest.raises(ConfigError, match="data.source: required"):
        DataConfig.from_mapping({"val_docs": 3})
