"""Memory estimators: pure functions of (architecture, workload, engine, library versions).

arch.py     config.json -> LlmArch (shapes, layer kinds, MoE, MLA, quantization)
weights.py  the tensors the implementation allocates for the weights, with their byte sizes
allocator.py PyTorch's CUDA caching-allocator rounding (what memory_reserved sees)
llm.py      transformers / vLLM: KV cache, prefill and decode activations, logits, overheads
fit.py      verdicts per GPU target, largest context / batch that fits, what to change
"""
