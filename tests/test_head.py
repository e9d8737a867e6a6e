"""The quant check's loss: logits from the model's own output head, rerun on the kept hidden states."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from maxact_card.errors import UnsupportedArchitectureError
from maxact_card.measure.head import CHUNK, OutputHead
from maxact_card.measure.hooks import forward
from maxact_card.quant.metrics import nll_sums

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import coverage  # noqa: E402  (tools/coverage.py)

# What each family does between its base model and the logits.
HEADS = {
    "cohere": ({"logit_scale": 0.0625}, "logits times logit_scale"),
    "granite": ({"logits_scaling": 8.0}, "logits divided by logits_scaling"),
    "hyperclovax": ({"logits_scaling": 0.125}, "logits times logits_scaling"),
    "gemma2": ({"final_logit_softcapping": 0.05}, "a softcap that bites"),
    "falcon_h1": ({"lm_head_multiplier": 3.0}, "logits times lm_head_multiplier"),
    "openai-gpt": ({}, "no final norm"),
    "llama": ({}, "the plain head"),
}


def _model(model_type: str, overrides: dict):
    model = coverage.build(model_type)
    for key, value in overrides.items():
        assert hasattr(model.config, key), key
        setattr(model.config, key, value)
    if model_type in ("cohere", "falcon_h1"):  # read from the config at construction
        torch.manual_seed(0)
        model = type(model)(model.config).eval()
    return model


@pytest.mark.parametrize("model_type", HEADS)
def test_the_loss_from_the_kept_hidden_states_equals_the_models_own(model_type):
    model = _model(model_type, HEADS[model_type][0])
    torch.manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (2, CHUNK + 7))  # two chunks, the last partial
    mask = torch.ones_like(ids, dtype=torch.bool)
    head = OutputHead(model)
    with torch.no_grad():
        with head.keep():
            out = forward(model, ids, mask.long())
        head.verify(out.logits, ids)
        total = torch.zeros(2, dtype=torch.float64)
        for start, logits in head.chunks(ids):
            stop = start + logits.shape[1]
            total += nll_sums(logits, ids[:, start + 1 : stop + 1]).double()
        expected = model(input_ids=ids, labels=ids, use_cache=False).loss
    assert total[1] == ids.numel() - ids.shape[0]
    assert float(total[0] / total[1]) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    if HEADS[model_type][0]:  # the family's head changes the loss: the bare lm_head would be wrong
        with torch.no_grad():
            bare = model.get_output_embeddings()(head.hidden[:, :-1])
            wrong = nll_sums(bare, ids[:, 1:])
        assert abs(float(wrong[0] / wrong[1]) - float(expected)) > 1e-3


def test_a_head_that_does_not_reproduce_the_forward_s_logits_is_refused():
    model = _model("llama", {})
    ids = torch.randint(3, 100, (1, 9))
    head = OutputHead(model)
    with torch.no_grad(), head.keep():
        out = forward(model, ids, torch.ones_like(ids))
    with pytest.raises(UnsupportedArchitectureError, match="does not reproduce its logits.*--no-quant-check"):
        head.verify(out.logits + 1.0, ids)
    head.verify(out.logits, ids)
    assert head.verified
    head.verify(out.logits + 1.0, ids)  # checked once
