"""OpenVLA's input/output contract, below both models and data (no nn.Module here).

Action tokenizer (256 bins on the last ids of the LLM vocabulary), prompt format, action/proprio
normalization, image transforms and the :class:`VLAProcessor` that bundles them. Exact rules:
docs/contracts.md, "OpenVLA I/O contract".
"""
