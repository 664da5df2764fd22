"""The data stages of the pipeline (docs/CONTRACTS.md, rules corpus / tokenizer / tokenize).

- `hades.data.synthetic`: the seeded toy language of the default study.
- `hades.data.corpus`: build_corpus (synthetic, local text files, HF datasets), read_texts, read_cloze.
- `hades.data.tokenizer`: build_tokenizer (train_bpe, file, hub), load_tokenizer.
- `hades.data.shards`: tokenize_shard / write_manifest, and TokenDataset, the training reader.

Submodules are imported explicitly (`from hades.data.shards import TokenDataset`), so that
importing one does not pull in torch or transformers for the others.
"""
