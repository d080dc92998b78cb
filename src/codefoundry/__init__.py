"""codefoundry: build code LLMs end to end, the way BigCode built StarCoder.

Stages (each reads and writes an artifact directory, see DESIGN.md):
curate → tokenizer → pack/train (FIM) → finetune (LoRA) → eval → serve.
"""

__version__ = "0.1.0"
