"""maxact_card.hub against the local Hub server, through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from maxact_card.errors import (
    AuthError,
    CorpusError,
    GatedRepoError,
    ModelNotFoundError,
    NetworkError,
    NoWeightsError,
    UsageError,
)
from maxact_card.hub import Hub, ModelSnapshot

READ = "hf_read_token_0123456789abcdef"
WRITE = "hf_write_token_0123456789abcdef"
OTHER_WRITE = "hf_other_write_token_0123456789"
BAD = "hf_not_a_known_token_0123456789"
TOKENS = (READ, WRITE, OTHER_WRITE, BAD)

CONFIG = json.dumps({"model_type": "llama", "hidden_size": 8}).encode()
SUPPORT = {
    "config.json": CONFIG,
    "generation_config.json": b"{}",
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "chat_template.jinja": b"{{ messages }}",
}
NOISE = {
    "README.md": b"---\nlicense: mit\n---\n# Tiny\n",
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "original/consolidated.pth": b"\0" * 4096,
    "assets/figure.png": b"\x89PNG fake",
    "optimizer.pt": b"\0" * 64,
}


def assert_clean(err: pytest.ExceptionInfo) -> str:
    """One line, no token."""
    text = str(err.value)
    assert "\n" not in text
    for token in TOKENS:
        assert token not in text
    return text


@pytest.fixture
def tokens(hub):
    hub.add_token(READ, user="reader", role="read")
    hub.add_token(WRITE, user="alice", role="write")
    hub.add_token(OTHER_WRITE, user="bob", role="write")
    return hub


# ---- resolve ------------------------------------------------------------------------------------


def test_resolve_branch_and_sha(hub):
    first = hub.create_repo("alice/tiny", {"config.json": CONFIG})
    second = hub.add_commit("alice/tiny", {"README.md": b"# hi\n"})
    dev = hub.add_commit("alice/tiny", {"x.txt": b"x"}, ref="dev")
    api = Hub()
    assert api.resolve_revision("alice/tiny") == second
    assert api.resolve_revision("alice/tiny", "main") == second
    assert api.resolve_revision("alice/tiny", "dev") == dev
    assert api.resolve_revision("alice/tiny", first) == first
    assert api.resolve_revision("alice/tiny", first[:10]) == first


def test_unknown_repo_and_revision(hub):
    hub.create_repo("alice/tiny", {"config.json": CONFIG})
    with pytest.raises(ModelNotFoundError) as err:
        Hub().resolve_revision("alice/nope")
    text = assert_clean(err)
    assert "no model repo 'alice/nope'" in text and hub.url in text and "--token" in text
    with pytest.raises(ModelNotFoundError) as err:
        Hub().resolve_revision("alice/tiny", "v9")
    assert "no revision 'v9'" in assert_clean(err)
    with pytest.raises(ModelNotFoundError):
        Hub().download_model("alice/tiny", "f" * 40)


def test_private_repo_needs_owner_token(tokens):
    sha = tokens.create_repo("alice/secret", {"config.json": CONFIG, "model.safetensors": b"w"}, private=True)
    with pytest.raises(ModelNotFoundError) as err:
        Hub().resolve_revision("alice/secret")
    assert "private" in assert_clean(err)
    with pytest.raises(ModelNotFoundError):
        Hub(token=READ).resolve_revision("alice/secret")
    assert Hub(token=WRITE).resolve_revision("alice/secret") == sha
    assert Hub(token=WRITE).download_model("alice/secret", sha).weight_files == ("model.safetensors",)


# ---- download_model ------------------------------------------------------------------------------


def test_download_model_fetches_only_what_loading_needs(tokens):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1]}}
    weights = {
        "model.safetensors.index.json": json.dumps(index).encode(),
        shards[0]: b"\1" * 1000,
        shards[1]: b"\2" * 1000,
    }
    extra_weights = {"consolidated.safetensors": b"\3" * 3000, "pytorch_model.bin": b"\4" * 500}
    sha = tokens.create_repo("alice/sharded", {**SUPPORT, **weights, **extra_weights, **NOISE})

    snap = Hub(token=WRITE).download_model("alice/sharded", sha)

    assert isinstance(snap, ModelSnapshot)
    assert snap.sha == sha and snap.weight_format == "safetensors" and snap.gguf_file is None
    assert snap.weight_files == tuple(sorted(weights, key=lambda n: (not n.endswith(".json"), n)))
    assert tokens.requested_files("alice/sharded") == set(SUPPORT) | set(weights)
    for name, data in {**SUPPORT, **weights}.items():
        assert (snap.path / name).read_bytes() == data
    assert not (snap.path / "README.md").exists() and not (snap.path / "original").exists()
    assert tokens.cdn_authorization_seen == []  # the token never leaves the Hub origin

    # a second call asks for the file list only: the files come from the local cache
    before = len(tokens.requests)
    again = Hub(token=WRITE).download_model("alice/sharded", sha)
    assert again == snap
    assert [p for _, p in tokens.requests[before:]] == [f"/api/models/alice/sharded/revision/{sha}?blobs=true"]


def test_download_model_single_safetensors_and_bin_fallback(hub):
    files = {**SUPPORT, "model.safetensors": b"w" * 10, "adapter.safetensors": b"a", **NOISE}
    sha = hub.create_repo("alice/single", files)
    snap = Hub().download_model("alice/single", sha)
    assert snap.weight_files == ("model.safetensors",)
    assert "adapter.safetensors" not in hub.requested_files("alice/single")

    sha = hub.create_repo("alice/bin", {**SUPPORT, "pytorch_model.bin": b"b" * 10, "training_args.bin": b"t", **NOISE})
    snap = Hub().download_model("alice/bin", sha)
    assert (snap.weight_format, snap.weight_files) == ("bin", ("pytorch_model.bin",))
    assert hub.requested_files("alice/bin") == set(SUPPORT) | {"pytorch_model.bin"}
    assert (snap.path / "pytorch_model.bin").read_bytes() == b"b" * 10


def test_download_model_fingerprints_the_weights_not_the_commit(hub):
    weights = b"w" * 10
    sha = hub.create_repo("alice/fp", {**SUPPORT, "model.safetensors": weights, **NOISE})
    first = Hub().download_model("alice/fp", sha)
    # By hand: sha256 over "name content-id" lines; the content id of an LFS file is its sha256.
    line = f"model.safetensors {hashlib.sha256(weights).hexdigest()}\n"
    assert first.weights == "sha256:" + hashlib.sha256(line.encode()).hexdigest()
    card_only = hub.add_commit("alice/fp", {"README.md": b"# new card\n"})
    assert Hub().download_model("alice/fp", card_only).weights == first.weights
    new_weights = hub.add_commit("alice/fp", {"model.safetensors": b"v" * 10})
    assert Hub().download_model("alice/fp", new_weights).weights not in (None, first.weights)


def test_download_model_sharded_bin(hub):
    index = {"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    shards = {name: name.encode() for name in index["weight_map"].values()}
    files = {**SUPPORT, **shards, "pytorch_model.bin.index.json": json.dumps(index).encode(), **NOISE}
    sha = hub.create_repo("alice/bin-sharded", files)
    snap = Hub().download_model("alice/bin-sharded", sha)
    assert snap.weight_format == "bin"
    assert set(snap.weight_files) == {"pytorch_model.bin.index.json", *shards}
    assert hub.requested_files("alice/bin-sharded") == set(SUPPORT) | set(snap.weight_files)


def test_download_model_gguf_only(hub):
    ggufs = {"tiny-Q4_K_M.gguf": b"q4", "tiny-f16.gguf": b"f16", "tiny-Q8_0.gguf": b"q8"}
    sha = hub.create_repo("alice/gguf", {**ggufs, "README.md": b"# gguf\n"})
    snap = Hub().download_model("alice/gguf", sha)
    assert (snap.weight_format, snap.gguf_file) == ("gguf", "tiny-f16.gguf")
    assert snap.gguf_path.read_bytes() == b"f16"
    assert hub.requested_files("alice/gguf") == {"tiny-f16.gguf"}

    snap = Hub().download_model("alice/gguf", sha, gguf_file="tiny-Q4_K_M.gguf")
    assert snap.gguf_path.read_bytes() == b"q4"
    with pytest.raises(NoWeightsError) as err:
        Hub().download_model("alice/gguf", sha, gguf_file="tiny-Q2_K.gguf")
    assert "tiny-f16.gguf" in assert_clean(err)


def test_no_weights(hub):
    sha = hub.create_repo("alice/empty", {**SUPPORT, **NOISE})
    with pytest.raises(NoWeightsError) as err:
        Hub().download_model("alice/empty", sha)
    text = assert_clean(err)
    assert f"repo 'alice/empty'@{sha[:12]} has no weight files (*.safetensors, *.bin, *.gguf)" in text
    assert hub.requested_files("alice/empty") == set()


def test_tiny_saved_model_round_trip(hub, upload_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "tiny" / "README.md").write_text("# tiny\n")
    sha = upload_dir("alice/tiny-llama", tmp_path / "tiny")

    snap = Hub().download_model("alice/tiny-llama", sha)
    assert "README.md" not in hub.requested_files("alice/tiny-llama")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(snap.path)
    assert loaded.config.num_hidden_layers == 2


# ---- gated ---------------------------------------------------------------------------------------


def test_gated_repo(tokens):
    sha = tokens.create_repo("meta/gated", {**SUPPORT, "model.safetensors": b"w", **NOISE}, gated="manual")
    # listing and the README are public, files are not
    assert Hub().resolve_revision("meta/gated") == sha
    assert Hub().read_text("meta/gated", "README.md", sha).startswith("---")
    with pytest.raises(GatedRepoError) as err:
        Hub().download_model("meta/gated", sha)
    text = assert_clean(err)
    assert "gated" in text and f"{tokens.url}/meta/gated" in text and "HF_TOKEN" in text
    with pytest.raises(GatedRepoError) as err:
        Hub(token=READ).download_model("meta/gated", sha)
    assert_clean(err)
    tokens.grant("meta/gated", "reader")
    snap = Hub(token=READ).download_model("meta/gated", sha)
    assert (snap.path / "model.safetensors").read_bytes() == b"w"


# ---- whoami / tokens -------------------------------------------------------------------------------


def test_whoami(tokens, monkeypatch):
    assert Hub(token=READ).whoami() == "reader"
    assert Hub(token=WRITE).whoami() == "alice"
    with pytest.raises(AuthError) as err:
        Hub(token=BAD).whoami()
    assert "rejected the token" in assert_clean(err)
    with pytest.raises(AuthError) as err:
        Hub().whoami()
    assert "no Hub token" in assert_clean(err)
    monkeypatch.setenv("HF_TOKEN", WRITE)  # the environment is used when no token is passed
    assert Hub().whoami() == "alice"


def test_bad_token_on_read(tokens):
    tokens.create_repo("alice/tiny", {"config.json": CONFIG})
    with pytest.raises(AuthError) as err:
        Hub(token=BAD).resolve_revision("alice/tiny")
    assert "invalid or expired" in assert_clean(err)


# ---- read_text / datasets ---------------------------------------------------------------------------


def test_read_text(hub):
    first = hub.create_repo("alice/card", {"config.json": CONFIG})
    second = hub.add_commit("alice/card", {"README.md": "# Ünïcode card\n".encode()})
    assert Hub().read_text("alice/card", "README.md", first) is None
    assert Hub().read_text("alice/card", "README.md", second) == "# Ünïcode card\n"
    assert Hub().read_text("alice/card", "README.md", "main") == "# Ünïcode card\n"


def test_download_dataset_file(hub):
    files = {"data/train.jsonl": b'{"text": "a"}\n', "big.parquet": b"x"}
    sha = hub.create_repo("corp/texts", files, repo_type="dataset")
    path = Hub().download_dataset_file("corp/texts", "data/train.jsonl")
    assert path.read_bytes() == b'{"text": "a"}\n'
    assert Hub().download_dataset_file("corp/texts", "data/train.jsonl", revision=sha) == path
    assert hub.requested_files("corp/texts", repo_type="dataset") == {"data/train.jsonl"}
    assert Hub().resolve_revision("corp/texts", repo_type="dataset") == sha
    with pytest.raises(CorpusError) as err:
        Hub().download_dataset_file("corp/texts", "data/missing.jsonl")
    assert "no file 'data/missing.jsonl'" in assert_clean(err)
    with pytest.raises(CorpusError) as err:
        Hub().download_dataset_file("corp/nope", "x.txt")
    assert "no dataset repo 'corp/nope'" in assert_clean(err)


# ---- commits and pull requests --------------------------------------------------------------------


def test_open_pr_push_and_find(tokens):
    audited = tokens.create_repo("alice/tiny", {"README.md": b"# Tiny\n", "config.json": CONFIG})
    tokens.add_commit("alice/tiny", {"config.json": b"{}"})  # main moves on after the audit
    hub = Hub(token=OTHER_WRITE)  # bob opens a PR on alice's repo

    url, num = hub.commit(
        "alice/tiny", {"README.md": b"# Tiny\n\n## Activations\n"},
        message="Add max-activation report", description="Measured with maxact-card.",
        parent_sha=audited, create_pr=True,
    )
    assert num == 1 and url == f"{tokens.url}/alice/tiny/discussions/1"
    head = tokens.head("alice/tiny", "refs/pr/1")
    assert tokens.commit_info("alice/tiny", head).parent == audited
    assert tokens.files_at("alice/tiny", "refs/pr/1")["config.json"] == CONFIG  # branched from the audited sha
    assert hub.pr_head_text("alice/tiny", 1, "README.md") == "# Tiny\n\n## Activations\n"
    assert hub.pr_head_text("alice/tiny", 1, "missing.md") is None
    assert tokens.files_at("alice/tiny", "main")["README.md"] == b"# Tiny\n"  # main untouched

    assert hub.find_open_pr("alice/tiny", author="bob", title="Add max-activation report") == 1
    assert hub.find_open_pr("alice/tiny", author="bob", title="Other title") is None
    assert hub.find_open_pr("alice/tiny", author="alice", title="Add max-activation report") is None

    url, num = hub.commit(
        "alice/tiny", {"README.md": b"# Tiny\n\n## Activations v2\n"},
        message="Update max-activation report", description="", parent_sha=audited, pr_num=1,
    )
    assert (url, num) == (f"{tokens.url}/alice/tiny/discussions/1", 1)
    new_head = tokens.head("alice/tiny", "refs/pr/1")
    assert tokens.commit_info("alice/tiny", new_head).parent == head
    assert hub.pr_head_text("alice/tiny", 1, "README.md") == "# Tiny\n\n## Activations v2\n"
    assert len(tokens.pull_requests("alice/tiny")) == 1

    # the real client reads details of that PR from the same server
    from huggingface_hub import HfApi

    details = HfApi(endpoint=tokens.url, token=OTHER_WRITE).get_discussion_details("alice/tiny", 1)
    assert details.is_pull_request and details.status == "open" and details.author == "bob"
    assert [e.type for e in details.events] == ["comment", "commit", "commit"]
    assert "Activations v2" in details.diff


def test_direct_commit_and_parent_check(tokens):
    sha = tokens.create_repo("alice/tiny", {"README.md": b"a\n"})
    hub = Hub(token=WRITE)
    url, num = hub.commit("alice/tiny", {"README.md": b"b\n"}, message="m", description="d", parent_sha=sha)
    assert num is None and url.startswith(f"{tokens.url}/alice/tiny/commit/")
    assert tokens.files_at("alice/tiny")["README.md"] == b"b\n"
    from maxact_card.errors import HubError

    with pytest.raises(HubError) as err:  # main is no longer at `sha`
        hub.commit("alice/tiny", {"README.md": b"c\n"}, message="m", description="d", parent_sha=sha)
    assert "412" in assert_clean(err)
    with pytest.raises(UsageError):
        hub.commit("alice/tiny", {"a": b"b"}, message="m", description="", pr_num=1, create_pr=True)


def test_write_without_rights(tokens):
    sha = tokens.create_repo("alice/tiny", {"README.md": b"a\n"})
    with pytest.raises(AuthError) as err:
        Hub(token=READ).commit(
            "alice/tiny", {"README.md": b"b\n"}, message="m", description="", parent_sha=sha, create_pr=True
        )
    assert "no write access to 'alice/tiny'" in assert_clean(err) and "--dry-run" in str(err.value)
    with pytest.raises(AuthError) as err:  # bob may open PRs but not push to alice's main
        Hub(token=OTHER_WRITE).commit("alice/tiny", {"README.md": b"b\n"}, message="m", description="")
    assert "no write access" in assert_clean(err)
    with pytest.raises(AuthError) as err:
        Hub().commit("alice/tiny", {"README.md": b"b\n"}, message="m", description="", create_pr=True)
    assert "needs a token with write access" in assert_clean(err)
    with pytest.raises(AuthError) as err:
        Hub(token=BAD).commit("alice/tiny", {"README.md": b"b\n"}, message="m", description="", create_pr=True)
    assert_clean(err)
    assert tokens.pull_requests("alice/tiny") == [] and tokens.files_at("alice/tiny")["README.md"] == b"a\n"


# ---- network failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "close", "html", "shape"])
def test_network_failure(tokens, fault):
    """An error answer, a dropped connection, or a 200 that is not the Hub's API (an HTML page or
    JSON of another shape, as a proxy or captive portal sends): one clear NetworkError each."""
    sha = tokens.create_repo("alice/tiny", {**SUPPORT, "model.safetensors": b"w"})
    tokens.set_fault(fault)
    hub = Hub(token=WRITE)
    for call in (
        lambda: hub.resolve_revision("alice/tiny"),
        lambda: hub.download_model("alice/tiny", sha),
        lambda: hub.whoami(),
        lambda: hub.find_open_pr("alice/tiny", author="alice", title="t"),
    ):
        with pytest.raises(NetworkError) as err:
            call()
        text = assert_clean(err)
        if fault in ("html", "shape"):
            assert f"the server at {tokens.url} answered, but not as the Hugging Face Hub does" in text
        else:
            assert text.startswith(f"cannot reach the Hub at {tokens.url} (")
        assert "HF_ENDPOINT" in text


def test_file_download_failure_after_listing(tokens, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # skip the client's retry back-off
    sha = tokens.create_repo("alice/tiny", {**SUPPORT, "model.safetensors": b"w"})
    tokens.set_fault("500", match="/resolve/")
    with pytest.raises(NetworkError) as err:
        Hub(token=WRITE).download_model("alice/tiny", sha)
    assert "HTTP 500" in assert_clean(err)
    with pytest.raises(NetworkError):
        Hub(token=WRITE).read_text("alice/tiny", "README.md", sha)


def test_unreachable_endpoint(hub):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(NetworkError) as err:
        Hub(token=WRITE, endpoint=dead).resolve_revision("alice/tiny")
    assert dead in assert_clean(err)


def test_repr_hides_token():
    assert WRITE not in repr(Hub(token=WRITE))


# ---- the test server itself (what other suites rely on) ----------------------------------------


def test_server_tree_discussions_and_comments(tokens):
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    tokens.create_repo("alice/tree", {"a.txt": b"a", "sub/b.txt": b"b", "sub/deep/c.safetensors": b"c"})
    api = HfApi(endpoint=tokens.url, token=OTHER_WRITE)
    top = {e.path: type(e) for e in api.list_repo_tree("alice/tree")}
    assert top == {"a.txt": RepoFile, "sub": RepoFolder}
    assert sorted(api.list_repo_files("alice/tree")) == ["a.txt", "sub/b.txt", "sub/deep/c.safetensors"]
    [lfs] = [e for e in api.list_repo_tree("alice/tree", "sub/deep") if isinstance(e, RepoFile)]
    assert lfs.lfs is not None and lfs.size == 1

    info = api.create_commit(
        "alice/tree",
        [CommitOperationAdd(path_in_repo="a.txt", path_or_fileobj=b"A")],
        commit_message="Change a",
        commit_description="why",
        create_pr=True,
    )
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1"
    api.comment_discussion("alice/tree", 1, "ping")
    details = api.get_discussion_details("alice/tree", 1)
    assert [e.type for e in details.events] == ["comment", "commit", "comment"]
    assert details.events[-1].content == "ping" and details.conflicting_files == []
    assert [d.num for d in api.get_repo_discussions("alice/tree", author="bob")] == [1]
    assert list(api.get_repo_discussions("alice/tree", author="alice")) == []
    assert list(api.get_repo_discussions("alice/tree", discussion_status="closed")) == []

