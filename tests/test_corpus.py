"""Corpus loading, selection, tokenization, fingerprint, split and batching."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from maxact_card.corpus import (
    BUILTIN_NAME,
    Document,
    TokenizedCorpus,
    load_documents,
    parse_hf_spec,
    select,
    tokenize,
)
from maxact_card.corpus_data import DOMAINS
from maxact_card.errors import CorpusError, UsageError
from maxact_card.report import CorpusRecord

# ---------------------------------------------------------------------------------------------
# helpers

WORDS = ["hello", "world", "the", "cat", "sat", "on", "mat", "a", "b", "c", "d", "e", "f", "g"]
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def make_tokenizer(add_bos: bool):
    """A word-level tokenizer built offline; `add_bos` decides whether BOS is prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": UNK}
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


class CharTokenizer:
    """A tokenizer-like callable: one id per character, BOS first."""

    bos_token_id = 0

    def __call__(self, texts, add_special_tokens=True, verbose=True):
        return {"input_ids": [[0] + [1 + (ord(ch) % 5000) for ch in t] for t in texts]}


def ids_of(word: str) -> int:
    return 4 + WORDS.index(word)


def docs(spec: dict[str, int]) -> list[Document]:
    """Documents named '<domain><i>' for domain sizes in `spec`, interleaved in input order."""
    out = []
    for domain, size in spec.items():
        out += [Document(text=f"{domain}{i}", input_ids=None, domain=domain) for i in range(size)]
    return out


def corpus_of(samples, domains=None, name="t") -> TokenizedCorpus:
    samples = tuple(tuple(s) for s in samples)
    return TokenizedCorpus(
        name=name,
        input_ids=samples,
        domains=tuple(domains or ["default"] * len(samples)),
        bos_added=False,
        max_seq_len=16,
        seed=0,
    )


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# builtin corpus

BUILTIN_HASH_SCRIPT = (
    "import hashlib\n"
    "from maxact_card.corpus import load_documents\n"
    "name, ds = load_documents('builtin')\n"
    "h = hashlib.sha256(name.encode())\n"
    "for d in ds:\n"
    "    h.update(d.domain.encode() + b'\\0' + d.text.encode() + b'\\0')\n"
    "print(h.hexdigest())\n"
)


def test_builtin_size_and_domains():
    name, documents = load_documents("builtin")
    assert name == BUILTIN_NAME == "builtin-v1"
    assert len(documents) >= 1000
    counts = collections.Counter(d.domain for d in documents)
    assert set(counts) == set(DOMAINS)
    assert len(counts) >= 10
    for domain in DOMAINS:
        assert counts[domain] >= 80, (domain, counts[domain])
    for d in documents:
        assert d.input_ids is None
        assert 200 <= len(d.text) <= 2000


def test_builtin_has_its_sources():
    _, documents = load_documents("builtin")
    by_domain = collections.defaultdict(list)
    for d in documents:
        by_domain[d.domain].append(d.text)
    assert any(t.startswith("# argparse.py\n") for t in by_domain["code"])  # stdlib source
    assert any("\n\n" in t and t.startswith("argparse.") for t in by_domain["technical"])  # docstrings
    assert any("-- " in t for t in by_domain["prose"])  # fortune quotations carry attributions
    joined = "".join(by_domain["multilingual"])
    for probe in ("é", "ß", "ñ", "д", "的", "ます", "니다", "ال", "है"):
        assert probe in joined, probe
    assert any(t.lstrip().startswith(("{", '{"')) for t in by_domain["structured"])


def test_builtin_identical_across_calls_and_processes():
    _, first = load_documents("builtin")
    name, second = load_documents("builtin-v1")
    assert name == "builtin-v1"
    assert first == second
    h = hashlib.sha256(BUILTIN_NAME.encode())
    for d in first:
        h.update(d.domain.encode() + b"\0" + d.text.encode() + b"\0")
    expected = h.hexdigest()
    for seed in ("1", "987"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", BUILTIN_HASH_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


# ---------------------------------------------------------------------------------------------
# select


def test_select_stratified_exact_counts_and_order():
    documents = docs({"a": 6, "b": 3, "c": 1})
    picked = select(documents, 5, seed=0)
    # exact shares 3, 1.5, 0.5 -> largest remainder 3, 2, 0 -> c needs one, b is furthest above its share
    assert [d.domain for d in picked] == ["a", "a", "b", "c", "a"]
    a_order = list(range(6))
    random.Random(0).shuffle(a_order)
    assert [d.text for d in picked if d.domain == "a"] == [f"a{i}" for i in a_order[:3]]


def test_select_counts_for_several_sizes():
    documents = docs({"a": 6, "b": 3, "c": 1})

    def counts(n):
        return dict(sorted(collections.Counter(d.domain for d in select(documents, n, seed=3)).items()))

    assert counts(0) == {}
    assert counts(2) == {"a": 1, "b": 1}  # fewer than the domains: plain largest remainder
    assert counts(3) == {"a": 1, "b": 1, "c": 1}
    assert counts(5) == {"a": 3, "b": 1, "c": 1}
    assert counts(7) == {"a": 4, "b": 2, "c": 1}
    assert counts(10) == {"a": 6, "b": 3, "c": 1}


def test_select_deterministic_and_seed_dependent():
    _, documents = load_documents("builtin")
    a = select(documents, 64, seed=0)
    b = select(documents, 64, seed=0)
    c = select(documents, 64, seed=1)
    assert a == b
    assert a != c
    assert len(a) == 64
    counts = collections.Counter(d.domain for d in a)
    assert set(counts) == set(DOMAINS)
    assert max(counts.values()) - min(counts.values()) <= 2


def test_select_more_than_available_returns_all():
    documents = docs({"x": 4, "y": 2})
    picked = select(documents, 100, seed=5)
    assert len(picked) == 6
    assert sorted(d.text for d in picked) == sorted(d.text for d in documents)
    assert picked == select(documents, 100, seed=5)
    assert [d.domain for d in picked] == ["x", "y", "x", "x", "y", "x"]


def test_select_independent_of_other_domains():
    with_c = select(docs({"a": 6, "b": 3, "c": 1}), 100, seed=2)
    without_c = select(docs({"a": 6, "b": 3}), 100, seed=2)
    assert [d for d in with_c if d.domain == "a"] == [d for d in without_c if d.domain == "a"]


def test_select_negative_n():
    with pytest.raises(UsageError):
        select(docs({"a": 1}), -1, seed=0)


# ---------------------------------------------------------------------------------------------
# local files


def test_jsonl_parsing(tmp_path):
    p = write(
        tmp_path,
        "c.jsonl",
        '{"text": "hello world", "domain": "greet", "extra": 1}\n'
        "\n"
        '  {"input_ids": [5, 6, 7]}  \r\n'
        '{"text": "the cat"}\n',
    )
    name, documents = load_documents(str(p))
    assert name == "c.jsonl"
    assert documents == [
        Document(text="hello world", input_ids=None, domain="greet"),
        Document(text=None, input_ids=(5, 6, 7), domain="default"),
        Document(text="the cat", input_ids=None, domain="default"),
    ]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ('{"text": "x"', "not valid JSON"),
        ("[1, 2]", "a JSON array, not an object"),
        ('{"txt": "x"}', "no 'text' or 'input_ids' field (keys: 'txt')"),
        ('{"text": 3}', "'text' must be a string, got number"),
        ('{"input_ids": [1, -2]}', "'input_ids' must be a list of non-negative integers"),
        ('{"input_ids": [1, true]}', "'input_ids' must be a list of non-negative integers"),
        ('{"input_ids": "1 2"}', "'input_ids' must be a list of non-negative integers"),
        ('{"text": "x", "domain": null}', "'domain' must be a non-empty string, got null"),
        ('{"text": "x", "input_ids": [1]}', "has both 'text' and 'input_ids'"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, bad, fragment):
    content = '{"text": "ok"}\n\n' + '{"text": "fine"}\n' * 4 + bad + "\n" + '{"text": "after"}\n'
    p = write(tmp_path, "corpus.jsonl", content)
    with pytest.raises(CorpusError) as info:
        load_documents(str(p))
    message = str(info.value)
    assert message.startswith("corpus.jsonl line 7: ")
    assert fragment in message
    assert message.endswith("each line must be a JSON object with 'text' or 'input_ids'")
    assert info.value.line == 7
    assert info.value.path == str(p)


def test_txt_parsing(tmp_path):
    p = write(tmp_path, "notes.txt", "\n\nfirst line\nsecond line\n\n\n   \nthird\r\n\r\nfourth\n  indented\n")
    name, documents = load_documents(str(p))
    assert name == "notes.txt"
    assert [d.text for d in documents] == ["first line\nsecond line", "third", "fourth\n  indented"]
    assert {d.domain for d in documents} == {"default"}
    assert all(d.input_ids is None for d in documents)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_names_the_line(tmp_path, suffix):
    p = write(tmp_path, "latin" + suffix, b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError) as info:
        load_documents(str(p))
    assert f"latin{suffix} line 3: not valid UTF-8" in str(info.value)
    assert info.value.line == 3


def test_missing_and_unknown_and_empty(tmp_path):
    with pytest.raises(CorpusError, match="corpus file not found: .*nope.jsonl; pass") as info:
        load_documents(str(tmp_path / "nope.jsonl"))
    assert isinstance(info.value, ValueError)
    with pytest.raises(CorpusError, match=r"unsupported corpus .*'builtin', a local \.jsonl file"):
        load_documents(str(write(tmp_path, "data.csv", "a,b\n")))
    with pytest.raises(CorpusError, match=r"^corpus empty.txt is empty; "):
        load_documents(str(write(tmp_path, "empty.txt", "\n  \n\n")))
    with pytest.raises(CorpusError, match=r"^corpus empty.jsonl is empty; "):
        load_documents(str(write(tmp_path, "empty.jsonl", "")))


def test_utf8_bom_is_accepted(tmp_path):
    p = write(tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"text": "hello"}\n')
    assert load_documents(str(p))[1] == [Document(text="hello", input_ids=None, domain="default")]


# ---------------------------------------------------------------------------------------------
# Hub files


def test_hf_spec_fetches_through_callable(tmp_path):
    local = write(tmp_path, "downloaded.jsonl", '{"text": "hello"}\n')
    calls = []

    def fetch(repo_id, path_in_repo, revision):
        calls.append((repo_id, path_in_repo, revision))
        return local, "f" * 40

    spec = "hf://datasets/some-org/my.data/sub/dir/file.jsonl"
    name, documents = load_documents(spec, fetch_dataset_file=fetch)
    assert calls == [("some-org/my.data", "sub/dir/file.jsonl", None)]
    assert name == "hf://datasets/some-org/my.data@" + "f" * 40 + "/sub/dir/file.jsonl"  # pinned to the commit
    assert documents == [Document(text="hello", input_ids=None, domain="default")]
    name, _ = load_documents("hf://datasets/some-org/my.data@v1.0/sub/dir/file.jsonl", fetch_dataset_file=fetch)
    assert calls[-1] == ("some-org/my.data", "sub/dir/file.jsonl", "v1.0")
    assert name == "hf://datasets/some-org/my.data@" + "f" * 40 + "/sub/dir/file.jsonl"


def test_hf_spec_txt_and_parse():
    assert parse_hf_spec("hf://datasets/a/b/c.txt") == ("a/b", None, "c.txt")
    assert parse_hf_spec("hf://datasets/a/b.c@main/d/e.jsonl") == ("a/b.c", "main", "d/e.jsonl")
    assert parse_hf_spec("hf://datasets/a/b@0123abc/e.txt") == ("a/b", "0123abc", "e.txt")


@pytest.mark.parametrize(
    "spec",
    [
        "hf://datasets/owner",
        "hf://datasets/owner/name",
        "hf://models/owner/name/file.jsonl",
        "hf://datasets/owner/name/file.parquet",
        "hf://datasets/owner/name/../file.jsonl",
        "hf://datasets//name/file.jsonl",
        "hf://datasets/owner/name@/file.jsonl",
    ],
)
def test_hf_spec_malformed(spec):
    with pytest.raises(CorpusError, match=r"expected hf://datasets/OWNER/NAME\[@REVISION\]/path/in/repo\.jsonl"):
        load_documents(spec, fetch_dataset_file=lambda r, p, v: (Path("/nonexistent"), "0" * 40))


def test_hf_spec_without_fetcher():
    with pytest.raises(UsageError):
        load_documents("hf://datasets/a/b/c.jsonl")


def test_hf_error_messages_use_the_spec(tmp_path):
    local = write(tmp_path, "x.jsonl", '{"text": "ok"}\nnot json\n')
    spec = "hf://datasets/a/b/x.jsonl"
    with pytest.raises(CorpusError, match=r"^hf://datasets/a/b/x\.jsonl line 2: not valid JSON"):
        load_documents(spec, fetch_dataset_file=lambda r, p, v: (local, "0" * 40))


# ---------------------------------------------------------------------------------------------
# tokenization


def test_tokenize_with_bos_and_truncation():
    tok = make_tokenizer(add_bos=True)
    documents = [
        Document(text="hello world the cat sat on the mat", input_ids=None, domain="p"),
        Document(text="   ", input_ids=None, domain="p"),  # dropped: nothing to tokenize
        Document(text=None, input_ids=(9, 8, 7, 6, 5, 4, 3), domain="ids"),
        Document(text=None, input_ids=(), domain="ids"),  # dropped: no tokens
        Document(text="a b", input_ids=None, domain="q"),
    ]
    c = tokenize(documents, tok, 4, name="n", seed=7)
    assert c.input_ids == (
        (BOS, ids_of("hello"), ids_of("world"), ids_of("the")),
        (9, 8, 7, 6),
        (BOS, ids_of("a"), ids_of("b")),
    )
    assert c.domains == ("p", "ids", "q")
    assert c.bos_added is True
    assert (c.name, c.seed, c.max_seq_len, c.tokens) == ("n", 7, 4, 11)


def test_tokenize_without_bos():
    tok = make_tokenizer(add_bos=False)
    c = tokenize([Document(text="the cat zebra", input_ids=None, domain="d")], tok, 10, name="n", seed=0)
    assert c.input_ids == ((ids_of("the"), ids_of("cat"), UNK),)
    assert c.bos_added is False


def test_tokenize_pretokenized_only_checks_ids_for_bos():
    tok = make_tokenizer(add_bos=True)
    with_bos = [Document(text=None, input_ids=(BOS, 5), domain="d")]
    without = [Document(text=None, input_ids=(5, BOS), domain="d")]
    assert tokenize(with_bos, tok, 8, name="n", seed=0).bos_added is True
    assert tokenize(without, tok, 8, name="n", seed=0).bos_added is False


def test_tokenize_empty_raises():
    tok = make_tokenizer(add_bos=False)
    documents = [Document(text=" ", input_ids=None, domain="d"), Document(text=None, input_ids=(), domain="d")]
    with pytest.raises(CorpusError, match="^corpus is empty after tokenization: "):
        tokenize(documents, tok, 8, name="n", seed=0)


def test_tokenize_builtin_selection():
    _, documents = load_documents("builtin")
    chosen = select(documents, 100, seed=0)
    c = tokenize(chosen, CharTokenizer(), 256, name=BUILTIN_NAME, seed=0)
    assert len(c) == 100
    assert [len(ids) for ids in c.input_ids] == [min(256, 1 + len(d.text)) for d in chosen]
    assert sum(len(ids) == 256 for ids in c.input_ids) > 50
    assert c.bos_added is True
    assert c.domains == tuple(d.domain for d in chosen)


def test_document_needs_exactly_one_payload():
    with pytest.raises(ValueError):
        Document(text="a", input_ids=(1,), domain="d")
    with pytest.raises(ValueError):
        Document(text=None, input_ids=None, domain="d")


# ---------------------------------------------------------------------------------------------
# fingerprint and record


def test_fingerprint_encoding_and_sensitivity():
    c = corpus_of([(1, 2, 3), (70000,)])
    h = hashlib.sha256()
    h.update(struct.pack("<I", 2))
    h.update(struct.pack("<I", 3) + struct.pack("<3i", 1, 2, 3))
    h.update(struct.pack("<I", 1) + struct.pack("<i", 70000))
    assert c.fingerprint == "sha256:" + h.hexdigest()
    assert corpus_of([(1, 2, 3), (70000,)], name="other").fingerprint == c.fingerprint
    assert corpus_of([(1, 2, 4), (70000,)]).fingerprint != c.fingerprint
    # the same ids cut differently are a different corpus
    assert corpus_of([(1, 2), (3, 70000)]).fingerprint != c.fingerprint
    assert corpus_of([(1, 2, 3, 70000)]).fingerprint != c.fingerprint


def test_record():
    c = TokenizedCorpus(
        name="builtin-v1",
        input_ids=((1, 2), (3,), (4, 5, 6)),
        domains=("math", "code", "math"),
        bos_added=True,
        max_seq_len=512,
        seed=3,
    )
    assert c.record() == CorpusRecord(
        name="builtin-v1",
        fingerprint=c.fingerprint,
        samples=3,
        tokens=6,
        bos_added=True,
        max_seq_len=512,
        seed=3,
        domains={"code": 1, "math": 2},
    )
    assert list(c.record().domains) == ["code", "math"]


# ---------------------------------------------------------------------------------------------
# split


def test_split_stratified_disjoint_covering():
    domains = ["a"] * 6 + ["b"] * 3 + ["c"]
    rng = random.Random(0)
    rng.shuffle(domains)
    samples = [(i, i + 1) for i in range(10)]
    c = corpus_of(samples, domains, name="x")
    calib, rest = c.split(5)
    assert collections.Counter(calib.domains) == {"a": 3, "b": 1, "c": 1}
    assert len(rest) == 5
    assert sorted(calib.input_ids + rest.input_ids) == sorted(c.input_ids)
    assert not set(calib.input_ids) & set(rest.input_ids)
    # corpus order kept; the earliest samples of each domain go to calibration
    assert list(calib.input_ids) == sorted(calib.input_ids)
    for d in "abc":
        in_domain = [s for s, dd in zip(c.input_ids, c.domains) if dd == d]
        taken = [s for s, dd in zip(calib.input_ids, calib.domains) if dd == d]
        assert taken == in_domain[: len(taken)]
    for part in (calib, rest):
        assert (part.name, part.seed, part.max_seq_len, part.bos_added) == ("x", 0, 16, False)
    assert c.split(5) == (calib, rest)


def test_split_edges():
    c = corpus_of([(1,), (2,), (3,)], ["a", "b", "a"])
    calib, rest = c.split(10)
    assert calib.input_ids == c.input_ids and len(rest) == 0
    calib, rest = c.split(0)
    assert len(calib) == 0 and rest.input_ids == c.input_ids
    with pytest.raises(UsageError):
        c.split(-1)


# ---------------------------------------------------------------------------------------------
# batches


def test_pad_batch_keeps_given_indices():
    from maxact_card.corpus import pad_batch

    b = pad_batch([(5, 6), (7, 8, 9)], [4, 1], pad_id=3)
    assert b.input_ids.tolist() == [[5, 6, 3], [7, 8, 9]]
    assert b.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b.sample_index.tolist() == [4, 1]
    with pytest.raises(ValueError):
        pad_batch([(1,)], [0, 1], pad_id=0)
