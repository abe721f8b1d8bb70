"""Random inputs for a vision-language model's generate(): the prompt with the image tokens the model
expects (counts from estimators/vision.py; the model refuses a mismatch, so a CPU run checks them) and
pixel values of the shape its image processor produces."""

from __future__ import annotations


def vlm_inputs(torch, model, w: dict, gen) -> dict:
    from gpu_preflight.estimators.vision import image_plan

    cfg = model.config.to_dict()
    size = w.get("image_size")
    if isinstance(size, str):
        a, _, b = size.lower().partition("x")
        size = (int(a), int(b or a))
    plan = image_plan(cfg, tuple(size) if size else None, w.get("processor"))
    n_img, batch, dev = int(w.get("images", 1)), int(w["batch"]), model.device
    tok = cfg.get("image_token_id", cfg.get("image_token_index"))
    vocab = model.config.get_text_config().vocab_size
    text = torch.randint(10, min(vocab - 10, 30000), (batch, w["input_len"]), device=dev, generator=gen)
    text[text == tok] = 11
    img = torch.full((batch, n_img * plan.tokens_per_image), int(tok), dtype=torch.long, device=dev)
    ids = torch.cat([img, text], dim=1)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "_image_tokens": n_img * plan.tokens_per_image}
    dt = model.dtype
    if plan.model_type in ("qwen2_vl", "qwen2_5_vl"):
        vc = cfg["vision_config"]
        p, tp = int(vc.get("patch_size", 14)), int(vc.get("temporal_patch_size", 2))
        gw, gh = plan.pixels[0] // p, plan.pixels[1] // p
        out["pixel_values"] = torch.randn((batch * n_img * gh * gw, 3 * tp * p * p), generator=gen,
                                          device=dev).to(dt)
        out["image_grid_thw"] = torch.tensor([[1, gh, gw]] * (batch * n_img), device=dev)
    else:
        out["pixel_values"] = torch.randn((batch * n_img, 3, plan.pixels[1], plan.pixels[0]), generator=gen,
                                          device=dev).to(dt)
        if plan.model_type in ("gemma3", "paligemma"):
            out["token_type_ids"] = (ids == int(tok)).long()
    return out
