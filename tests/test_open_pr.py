"""Publishing through the CLI: `audit --open-pr` against the local Hub server, and `--write-card`."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxact_card.card import BEGIN_MARKER, END_MARKER, extract_metadata, render_pr_description, render_readme
from maxact_card.publish import PR_TITLE
from maxact_card.report import Report
from cli_helpers import assert_one_line_error, invoke
from models import save_tiny

REPO = "org/tiny-llama"
SMALL = ["--samples", "8", "--max-seq-len", "32", "--no-quant-check", "--no-progress"]
WRITE = "hf_alice_write_token_0123456789ab"
READ = "hf_reader_read_token_0123456789ab"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_FILES = {"README.md", "maxact_layers.png", "maxact_report.json"}
AUTHOR_README = (
    "---\n"
    "license: apache-2.0\n"
    "# the author's comment\n"
    "model-index:\n"
    "- name: tiny-llama\n"
    "  results: []\n"
    "extra_field: null\n"
    "---\n"
    "\n"
    "# Tiny llama\n"
    "\n"
    "A random model for tests.  Two spaces, a tab\there, and no newline at the end"
)




@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("prckpt") / "tiny-llama")


@pytest.fixture
def repo(hub, tiny_ckpt) -> str:
    """org/tiny-llama with the author's README; alice may write (open PRs), reader may only read."""
    from hubserver import read_dir

    hub.add_token(WRITE, user="alice", role="write")
    hub.add_token(READ, user="reader", role="read")
    return hub.create_repo(REPO, {**read_dir(tiny_ckpt), "README.md": AUTHOR_README.encode()})


def pr_commits(hub, num: int = 1) -> list[str]:
    """Commits on refs/pr/N, newest first, down to (not including) the PR's base."""
    base = hub.pull_requests(REPO)[num - 1].base_sha
    sha, out = hub.head(REPO, f"refs/pr/{num}"), []
    while sha != base:
        out.append(sha)
        sha = hub.commit_info(REPO, sha).parent
    return out


def audit_pr(tmp_path: Path, name: str, *extra: str, token: str | None = WRITE, env: dict | None = None):
    args = ["audit", REPO, *SMALL, "--open-pr", "-o", str(tmp_path / name), *extra]
    if token:
        args += ["--token", token]
    return invoke(args, env=env)


def test_first_run_opens_a_pull_request_with_the_card(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "run1")
    assert result.exit_code == 0, result.output
    url = f"{hub.url}/{REPO}/discussions/1"
    assert result.stdout.splitlines()[-1] == f"pull request: {url}"
    assert WRITE not in result.output

    prs = hub.pull_requests(REPO)
    assert len(prs) == 1
    pr = prs[0]
    assert (pr.num, pr.title, pr.author, pr.status, pr.base_sha) == (1, PR_TITLE, "alice", "open", repo)
    head = hub.commit_info(REPO, hub.head(REPO, "refs/pr/1"))
    assert head.parent == repo
    assert hub.head(REPO) == repo  # main untouched

    files = hub.files_at(REPO, "refs/pr/1")
    base = hub.files_at(REPO, repo)
    assert {p for p in files if files[p] != base.get(p)} == CARD_FILES
    assert files["maxact_layers.png"].startswith(PNG_SIGNATURE)
    report = Report.from_json(files["maxact_report.json"].decode())
    assert report == Report.load(tmp_path / "run1" / "maxact_report.json")
    assert (report.model.id, report.model.source, report.model.revision) == (REPO, "hub", repo)
    assert WRITE.encode() not in files["maxact_report.json"] and WRITE.encode() not in files["README.md"]

    readme = files["README.md"].decode()
    assert readme == render_readme(report, AUTHOR_README)
    fm_end = AUTHOR_README.index("---\n", 4)
    assert readme.startswith(AUTHOR_README[:fm_end] + "activation_range:\n")
    body = AUTHOR_README[fm_end + 4:]
    assert readme[readme.index("---\n", 4) + 4:].startswith(body)
    assert BEGIN_MARKER in readme and readme.rstrip("\n").endswith(END_MARKER)
    meta = extract_metadata(readme)
    assert meta["settings_key"].startswith(f"weights={report.model.weights};") and "samples=8;" in meta["settings_key"]
    assert report.model.weights.startswith("sha256:")
    assert head.message == PR_TITLE and head.description == render_pr_description(report)


def test_reruns_update_the_same_pull_request_or_do_nothing(hub, repo: str, tmp_path: Path):
    assert audit_pr(tmp_path, "run1").exit_code == 0
    first = pr_commits(hub)
    assert len(first) == 1

    # Other settings: a new commit on the same pull request.
    result = audit_pr(tmp_path, "run2", "--samples", "6")
    assert result.exit_code == 0, result.output
    assert len(hub.pull_requests(REPO)) == 1
    commits = pr_commits(hub)
    assert len(commits) == 2 and commits[1] == first[0]
    assert result.stdout.splitlines()[-1] == f"pull request: {hub.url}/{REPO}/discussions/1"
    files = hub.files_at(REPO, "refs/pr/1")
    report = Report.from_json(files["maxact_report.json"].decode())
    assert report.corpus.samples == 6 and report.model.revision == repo
    # Still based on the author's README at the audited commit, not on the first PR commit.
    assert files["README.md"].decode() == render_readme(report, AUTHOR_README)

    # The same settings again: nothing to do, and it says so.
    result = audit_pr(tmp_path, "run3", "--samples", "6")
    assert result.exit_code == 0, result.output
    assert "already carries this activation range; nothing to do" in result.output
    assert "pull request: " not in result.stdout
    assert pr_commits(hub) == commits and len(hub.pull_requests(REPO)) == 1
    assert (tmp_path / "run3" / "maxact_report.json").is_file()  # the report is still written locally

    # --force publishes again.
    result = audit_pr(tmp_path, "run4", "--samples", "6", "--force")
    assert result.exit_code == 0, result.output
    after = pr_commits(hub)
    assert len(after) == 3 and after[1:] == commits and len(hub.pull_requests(REPO)) == 1


def test_after_the_pull_request_is_merged_a_rerun_on_main_does_nothing(hub, repo: str, tmp_path: Path):
    assert audit_pr(tmp_path, "run1").exit_code == 0
    merged = hub.add_commit(REPO, hub.files_at(REPO, "refs/pr/1"), message="Merge pull request #1")
    with hub.lock:
        hub.repo(REPO).discussions[0].status = "merged"
    result = audit_pr(tmp_path, "release")  # main, now the merge commit: another sha, the same weights
    assert result.exit_code == 0, result.output
    assert f"{REPO}@{merged[:12]} already carries an activation range for these settings" in result.output
    assert len(hub.pull_requests(REPO)) == 1 and hub.head(REPO) == merged
    # New weights on main are a new checkpoint: a new pull request.
    from hubserver import read_dir

    changed = read_dir(save_tiny(tmp_path / "retrained", seed=1))
    hub.add_commit(REPO, {k: v for k, v in changed.items() if k.endswith(".safetensors")}, message="retrain")
    result = audit_pr(tmp_path, "retrained-run")
    assert result.exit_code == 0, result.output
    assert [p.num for p in hub.pull_requests(REPO)] == [1, 2]


def test_token_from_the_environment(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "run1", token=None, env={"HF_TOKEN": WRITE})
    assert result.exit_code == 0, result.output
    assert len(hub.pull_requests(REPO)) == 1 and hub.pull_requests(REPO)[0].author == "alice"
    assert WRITE not in result.output


def test_read_only_token_is_refused_with_a_hint(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "ro", token=READ)
    message = assert_one_line_error(result, "no write access", REPO, "--dry-run")
    assert READ not in result.output and READ not in message
    assert result.exit_code == 2
    assert hub.pull_requests(REPO) == []
    assert hub.head(REPO) == repo and set(hub.repo(REPO).refs) == {"main"}
    # Found out before the audit, from the token's role: nothing was measured or written.
    assert hub.request_count("POST") == 0 and "loading" not in result.stderr
    assert not (tmp_path / "ro").exists()


def test_no_token_is_refused_with_a_hint(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "none", token=None)
    assert_one_line_error(result, "token", "HF_TOKEN")
    assert hub.pull_requests(REPO) == []


def _assert_dry_run_output(result, hub, repo: str, tmp_path: Path, name: str) -> None:
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"dry run: would open a pull request on {REPO} (base {repo[:12]}) with " \
           "README.md, maxact_layers.png, maxact_report.json" in out
    assert "--- a/README.md\n+++ b/README.md\n" in out
    report = Report.load(tmp_path / name / "maxact_report.json")
    new = render_readme(report, AUTHOR_README)
    added = [line[1:] for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert BEGIN_MARKER in added and END_MARKER in added and "activation_range:" in added
    removed = [line for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    # Only the author's last line is touched (it gains the newline it lacked).
    assert removed == ["-A random model for tests.  Two spaces, a tab\there, and no newline at the end"]
    assert "\\ No newline at end of file" in out
    assert all(line in new.splitlines() for line in added)
    assert "pull request: " not in out
    assert hub.pull_requests(REPO) == [] and set(hub.repo(REPO).refs) == {"main"} and hub.head(REPO) == repo
    assert hub.request_count("POST") == 0


def test_dry_run_prints_the_diff_and_touches_nothing(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "dry", "--dry-run")
    _assert_dry_run_output(result, hub, repo, tmp_path, "dry")
    assert WRITE not in result.output


def test_dry_run_with_a_read_only_token(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "dry", "--dry-run", token=READ)
    _assert_dry_run_output(result, hub, repo, tmp_path, "dry")


def test_dry_run_without_a_token(hub, repo: str, tmp_path: Path):
    result = audit_pr(tmp_path, "dry", "--dry-run", token=None)
    _assert_dry_run_output(result, hub, repo, tmp_path, "dry")


def test_dry_run_shows_an_update_of_the_open_pull_request(hub, repo: str, tmp_path: Path):
    assert audit_pr(tmp_path, "run1").exit_code == 0
    commits = pr_commits(hub)
    result = audit_pr(tmp_path, "dry", "--samples", "6", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"dry run: would update pull request #1 on {REPO}" in result.stdout
    assert pr_commits(hub) == commits


def test_write_card_updates_the_local_checkpoint(tiny_ckpt: Path, tmp_path: Path):
    import shutil

    ckpt = tmp_path / "tiny-llama"
    shutil.copytree(tiny_ckpt, ckpt)
    author = AUTHOR_README.replace("\n", "\r\n").encode()  # CRLF, kept as it is
    (ckpt / "README.md").write_bytes(author)
    weights = (ckpt / "model.safetensors").read_bytes()
    out = tmp_path / "out"

    result = invoke(["audit", str(ckpt), *SMALL, "--write-card", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"card: {ckpt / 'README.md'}"
    report = Report.load(out / "maxact_report.json")
    assert Report.load(ckpt / "maxact_report.json") == report
    assert (ckpt / "maxact_layers.png").read_bytes().startswith(PNG_SIGNATURE)
    readme = (ckpt / "README.md").read_bytes()
    assert readme.decode() == render_readme(report, author.decode())
    fm_end = author.index(b"---\r\n", 4)
    assert readme.startswith(author[:fm_end] + b"activation_range:")
    assert author[fm_end:] in readme.replace(b"end\r\n", b"end")  # body kept (plus its missing line break)
    assert b"\r\n" + BEGIN_MARKER.encode() + b"\r\n" in readme
    assert readme.count(b"\n") == readme.count(b"\r\n")  # every line ending stays CRLF
    assert (ckpt / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in ckpt.iterdir() if not p.name.startswith(".")) == sorted(
        [*(p.name for p in tiny_ckpt.iterdir()), "README.md", "maxact_layers.png", "maxact_report.json"])
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]  # no temp files left

    # A second run with the same settings changes only what the new report changes.
    result = invoke(["audit", str(ckpt), *SMALL, "--write-card", "-o", str(out)])
    assert result.exit_code == 0, result.output
    again = Report.load(out / "maxact_report.json")
    assert (ckpt / "README.md").read_bytes().decode() == render_readme(again, author.decode())


def test_pull_request_branches_from_the_audited_commit_not_main(hub, repo: str, tmp_path: Path):
    newer = hub.add_commit(REPO, {"README.md": b"# rewritten on main\n"}, message="edit card")
    result = audit_pr(tmp_path, "old", "--revision", repo)
    assert result.exit_code == 0, result.output
    pr = hub.pull_requests(REPO)[0]
    assert pr.base_sha == repo and hub.commit_info(REPO, hub.head(REPO, "refs/pr/1")).parent == repo
    files = hub.files_at(REPO, "refs/pr/1")
    report = Report.from_json(files["maxact_report.json"].decode())
    assert report.model.revision == repo
    assert files["README.md"].decode() == render_readme(report, AUTHOR_README)  # the card as of that commit
    assert hub.head(REPO) == newer


def test_other_users_and_closed_pull_requests_are_left_alone(hub, repo: str, tmp_path: Path):
    bob = "hf_bob_write_token_0123456789abcd"
    hub.add_token(bob, user="bob", role="write")
    assert audit_pr(tmp_path, "bob", token=bob).exit_code == 0
    result = audit_pr(tmp_path, "alice", "--samples", "6")  # other settings: her own pull request
    assert result.exit_code == 0, result.output
    prs = hub.pull_requests(REPO)
    assert [(p.num, p.author) for p in prs] == [(1, "bob"), (2, "alice")]
    assert result.stdout.splitlines()[-1] == f"pull request: {hub.url}/{REPO}/discussions/2"
    assert len(pr_commits(hub, 1)) == 1

    with hub.lock:
        hub.repo(REPO).discussions[1].status = "closed"
    result = audit_pr(tmp_path, "alice2", "--samples", "6")
    assert result.exit_code == 0, result.output
    assert [(p.num, p.author, p.status) for p in hub.pull_requests(REPO)] == [
        (1, "bob", "open"), (2, "alice", "closed"), (3, "alice", "open")]
    assert len(pr_commits(hub, 2)) == 1 and len(pr_commits(hub, 3)) == 1


def test_open_pr_needs_a_hub_repo(tiny_ckpt: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = invoke(["audit", str(tiny_ckpt), *SMALL, "--open-pr", "--token", WRITE, "-o", str(out)])
    assert_one_line_error(result, "no Hub revision", "audit the Hub repo id")
    assert WRITE not in result.output and not out.exists()  # refused before the audit


BOB = "hf_bob_write_token_0123456789abcd"


def test_an_open_pull_request_by_anyone_with_the_same_measurement_is_not_duplicated(hub, repo: str, tmp_path: Path):
    hub.add_token(BOB, user="bob", role="write")
    assert audit_pr(tmp_path, "alice").exit_code == 0
    result = audit_pr(tmp_path, "bob", token=BOB)
    assert result.exit_code == 0, result.output
    assert f"pull request #1 (by alice) on {REPO} already carries this activation range; nothing to do" in result.output
    assert [(p.num, p.author) for p in hub.pull_requests(REPO)] == [(1, "alice")]
    # Other settings: bob opens his own (alice's is hers to update).
    result = audit_pr(tmp_path, "bob2", "--samples", "6", token=BOB)
    assert result.exit_code == 0, result.output
    assert [(p.num, p.author, p.status) for p in hub.pull_requests(REPO)] == [(1, "alice", "open"), (2, "bob", "open")]


def test_of_two_pull_requests_for_the_same_measurement_the_newer_closes(hub, repo: str, tmp_path: Path):
    """The race, played step by step: two runs both found nothing and both opened a pull request."""
    from maxact_card.card import settings_key
    from maxact_card.hub import Hub
    from maxact_card.publish import PR_TITLE, _settle, card_files

    assert audit_pr(tmp_path, "run", "--dry-run").exit_code == 0
    report = Report.load(tmp_path / "run" / "maxact_report.json")
    files = card_files(report, render_readme(report, AUTHOR_README))
    h = Hub(token=WRITE, endpoint=hub.url)
    for _ in range(2):
        h.commit(REPO, files, message=PR_TITLE, description="x", parent_sha=repo, create_pr=True)
    said: list[str] = []
    assert _settle(h, REPO, 1, settings_key(report), said.append) is None  # the older one stays
    assert _settle(h, REPO, 2, settings_key(report), said.append) == 1
    assert [(p.num, p.status) for p in hub.pull_requests(REPO)] == [(1, "open"), (2, "closed")]
    assert "closed #2" in said[0]
    closing = hub.pull_requests(REPO)[1].events
    assert any(e["type"] == "comment" and "#1, opened at the same time" in e["data"]["latest"]["raw"] for e in closing)


def test_concurrent_runs_on_one_repo_end_with_one_pull_request(hub, repo: str, tmp_path: Path):
    import os
    import subprocess
    import sys

    hub.add_token(BOB, user="bob", role="write")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_TOKEN", None)
    procs = [subprocess.Popen([sys.executable, "-m", "maxact_card", "audit", REPO, *SMALL, "--open-pr", "--token", token,
                               "-o", str(tmp_path / name)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for name, token in (("a", WRITE), ("b", BOB))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    open_prs = [p for p in hub.pull_requests(REPO) if p.status == "open"]
    assert len(open_prs) == 1, [(p.num, p.author, p.status) for p in hub.pull_requests(REPO)]
