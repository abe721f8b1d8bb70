"""generate() inputs for encoder-decoders and vision-language models (measurement child and the CPU tracer).

Random values of the shapes the real preprocessing produces (memory does not depend on the values):
- seq2seq (T5, BART): `input_len` encoder token ids; generate() starts the decoder from its start token.
- speech_seq2seq (Whisper): log-mel `input_features` of num_mel_bins x 2 * max_source_positions frames
  (WhisperFeatureExtractor pads or cuts every input to 30 s, 3000 frames; longer audio is generated in
  successive 30 s windows, each the same shape), so `audio_seconds` does not change the shape.
- vlm: `images` random images of `image_size` per prompt, turned into pixel values and image tokens with
  the counts of estimators/vision.py (the model itself checks that they agree), then `input_len` text tokens.
"""

from __future__ import annotations


def inputs_for(torch, model, kind: str, w: dict, gen) -> dict:
    if kind == "seq2seq":
        return _seq2seq(torch, model, w, gen)
    if kind == "speech_seq2seq":
        return _speech(torch, model, w, gen)
    from gpu_preflight.measurement.vision_inputs import vlm_inputs

    return vlm_inputs(torch, model, w, gen)


def _seq2seq(torch, model, w: dict, gen) -> dict:
    vocab = model.config.vocab_size
    dev = model.device
    ids = torch.randint(10, max(vocab - 10, 11), (w["batch"], w["input_len"]), device=dev, generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _speech(torch, model, w: dict, gen) -> dict:
    c = model.config
    frames = 2 * int(c.max_source_positions)
    feats = torch.randn((w["batch"], int(c.num_mel_bins), frames), device=model.device, generator=gen,
                        dtype=torch.float32).to(model.dtype)
    start = int(c.decoder_start_token_id if c.decoder_start_token_id is not None else 0)
    dec = torch.full((w["batch"], 1), start, dtype=torch.long, device=model.device)
    return {"input_features": feats, "decoder_input_ids": dec, "_plain_generate": True}
