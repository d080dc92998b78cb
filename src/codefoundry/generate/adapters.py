"""The engine's LoRA adapters: loaded and unloaded at run time by name, each in a slot of the batch.

    registry = AdapterRegistry(model)
    registry.load("sql", "adapters/sql/")          # PEFT format (codefoundry.model.lora)
    key = registry.key("sql")                       # what a Request carries as adapter_id
    with registry.step([key, None, key], num_new=[5, 1, 1]):   # one forward: two sequences with it, one base
        model.forward_paged(...)
    registry.unload("sql")

A request names its adapter (`SamplingParams.adapter_id`); the engine stores the adapter's
`key` on its `Request`. The key is the name plus a digest of the adapter's files, so prefix-
cache blocks computed with one adapter are never found for another, nor for a different
adapter loaded later under the same name (block hashes include the request's adapter_id).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from codefoundry.errors import UserError
from codefoundry.model.lora import LoraAdapter, LoraBatch, LoraLayers, load_adapter

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Adapter names: a path segment and an OpenAI model id alike (no slashes, spaces or leading dots)."""


class AdapterError(UserError):
    """An adapter cannot be loaded, found or unloaded; the message says why."""


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    key: str                   # name + content digest: the Request.adapter_id of requests using it
    adapter: LoraAdapter

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.adapter.path), **self.adapter.describe()}


class AdapterRegistry:
    """Name → loaded adapter for one model; builds the per-step `LoraBatch` the model's hooks apply."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = LoraLayers(model)
        self._by_name: dict[str, LoadedAdapter] = {}
        self._by_key: dict[str, LoadedAdapter] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def describe(self) -> list[dict]:
        return [self._by_name[n].describe() for n in self.names()]

    def load(self, name: str, path: str | Path) -> LoadedAdapter:
        """Read the adapter at `path` under `name` (a new name; unload first to replace one)."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise AdapterError(f"adapter name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit")
        if name in self._by_name:
            raise AdapterError(f"an adapter named {name!r} is already loaded (from {self._by_name[name].adapter.path})")
        adapter = load_adapter(path, self.model)
        loaded = LoadedAdapter(name, f"{name}@{adapter.digest}", adapter)
        self.layers.attach(list(adapter.modules), adapter.tokens)
        self._by_name[name], self._by_key[loaded.key] = loaded, loaded
        return loaded

    def unload(self, name: str) -> LoadedAdapter:
        loaded = self.get(name)
        del self._by_name[name], self._by_key[loaded.key]
        self.layers.forget(loaded.adapter)
        if not self._by_name:
            self.layers.detach()           # no adapter left: the model runs without hooks
        return loaded

    def get(self, name: str) -> LoadedAdapter:
        if name not in self._by_name:
            raise AdapterError(f"adapter {name!r} is not loaded; {self.known()}")
        return self._by_name[name]

    def key(self, name: str) -> str:
        return self.get(name).key

    def known(self) -> str:
        """The loaded adapters' names, for error messages."""
        return f"loaded adapters: {', '.join(self.names())}" if self._by_name else "no adapters are loaded"

    def step(self, adapter_ids: Sequence[Hashable | None], num_new: Sequence[int],
             logits_rows: Sequence[int] | None = None) -> AbstractContextManager[None]:
        """The context one forward runs in: sequence i's `num_new[i]` flat tokens use adapter `adapter_ids[i]`
        (None: the base model); `logits_rows` are the flat rows the model's head sees."""
        if not any(a is not None for a in adapter_ids):
            return nullcontext()
        order: dict[Hashable, int] = {}
        slots: list[int] = []
        for adapter_id, n in zip(adapter_ids, num_new, strict=True):
            slot = -1 if adapter_id is None else order.setdefault(adapter_id, len(order))
            slots.extend([slot] * n)
        missing = [a for a in order if a not in self._by_key]
        if missing:
            raise AdapterError(f"adapters {missing} were unloaded while requests used them")
        device = next(self.model.parameters()).device
        batch = LoraBatch.build([self._by_key[a].adapter for a in order], slots, logits_rows, device)
        return self.layers.batch(batch)
