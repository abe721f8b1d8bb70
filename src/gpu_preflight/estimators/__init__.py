"""Memory estimators: pure functions of (architecture, workload, engine, library versions).

arch.py       config.json -> LlmArch (shapes, layer kinds, MoE, MLA, quantization)
weights.py    the tensors the implementation allocates for the weights, with their byte sizes
allocator.py  PyTorch's CUDA caching-allocator rounding (what memory_reserved sees)
overheads.py  measured CUDA context + library overhead per GPU architecture and torch
plan.py       the estimate report: verdicts per GPU target, largest context / batch, what to change
engines/      one module per engine: transformers.py (replay of prefill and decode), vllm.py
              (start-up budget and KV-cache capacity), diffusers.py (image and video pipelines)
"""
