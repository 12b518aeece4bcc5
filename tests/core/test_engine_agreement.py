"""`top1_agreement`: one forward pass scores a reply against the model's own top-1 choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergechat.core.engine.agreement import top1_agreement

pytestmark = pytest.mark.slow


def test_a_models_own_greedy_reply_agrees_fully_and_a_changed_token_is_the_first_miss(
    tiny_model_dir: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([[1, 17, 42, 99, 5]])
    with torch.inference_mode():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
        )
    reply = out[0, prompt.shape[1] :].tolist()
    assert len(reply) == 12
    agreement = top1_agreement(model, prompt, reply)
    assert (agreement.matched, agreement.tokens, agreement.first_miss) == (12, 12, None)
    assert agreement.score == 1.0

    changed = list(reply)
    changed[4] = (changed[4] + 1) % model.config.vocab_size
    agreement = top1_agreement(model, prompt, changed)
    assert agreement.first_miss == 4
    assert agreement.matched < 12
    assert top1_agreement(model, prompt, []).score is None
