"""A small typed seam around llama-cpp-python: the only module that imports it.

Imported lazily (by ``local.py`` on first use), so Cove starts without loading native code when an
upstream is configured. The binding's annotations are partial, so untyped calls stay in here.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar
from llama_cpp.llama_grammar import SchemaConverter as _SchemaConverter

_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
           "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
           "{% endif %}")
"""Used only if a GGUF carries no chat template of its own."""


class Loaded:
    """One loaded GGUF with its chat template. Not thread-safe: the caller serializes use."""

    def __init__(self, path: Path, *, n_ctx: int, n_threads: int, n_threads_batch: int) -> None:
        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                          n_threads_batch=n_threads_batch, verbose=False)
        model: Any = self._llm._model  # the vocab handle has no public accessor
        self._vocab = model.vocab
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=self._llm.metadata.get("tokenizer.chat_template") or _CHATML,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            add_generation_prompt=True)
        start = self._llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
        self.message_start: int | None = start[0] if len(start) == 1 else None
        """The token each ChatML message (and the generation prompt) opens with, if the vocab has it."""
        self._control_spellings = sorted(
            {text for token in range(self._llm.n_vocab())
             if llama_cpp.llama_vocab_get_attr(self._vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
             and len(text := model.token_get_text(token)) > 1}, key=len, reverse=True)
        """How the vocab's control tokens are spelled: text that may not reach the tokenizer as such."""
        opening = self._llm.tokenize(b"", add_bos=True, special=True)
        self._bos: int | None = opening[0] if opening else None
        """The token a prompt opens with when the template does not write it itself (None: none)."""

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation rendered by the model's own chat template (GGUF metadata), tokenized.

        Only the template may produce control tokens: a user who types ``<|im_end|>`` into a message
        must not close their turn and forge a system or assistant one. So the template is rendered
        around markers, its own text is tokenized with special tokens and the messages' text as
        plain text. A template that does not pass the markers through verbatim (one that rewrites
        content) gets every special-token string in the text broken up instead.
        """
        nonce = secrets.token_hex(8)
        marked = [{**message, "content": f"\x00{nonce}:{index}\x00"} for index, message in enumerate(messages)]
        rendered = self._formatter(messages=marked)  # type: ignore[arg-type]
        pieces = re.split(f"\x00{nonce}:(\\d+)\x00", rendered.prompt)
        used = [int(index) for index in pieces[1::2]]
        if sorted(used) != list(range(len(messages))):
            defused = [{**message, "content": self._defuse(message.get("content") or "")} for message in messages]
            prompt = self._formatter(messages=defused).prompt  # type: ignore[arg-type]
            return self._llm.tokenize(prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        tokens: list[int] = []
        for position, piece in enumerate(pieces):
            if position % 2:
                text, special = messages[int(piece)].get("content") or "", False
            else:
                text, special = piece, True
            if text:
                tokens += self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        if not rendered.added_special and self._bos is not None:
            tokens.insert(0, self._bos)
        return tokens

    def _defuse(self, text: str) -> str:
        """``text`` with each control token's spelling split by a zero-width space."""
        for spelling in self._control_spellings:
            if spelling in text:
                text = text.replace(spelling, spelling[:1] + "\u200b" + spelling[1:])
        return text

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens are still in the KV cache from the previous turn."""
        cached = self._llm.input_ids[: self._llm.n_tokens].tolist()
        n = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n - 1 if n == len(tokens) and n > 0 else n

    def generate(self, tokens: list[int], *, temperature: float, top_p: float, grammar: str | None,
                 repeat_penalty: float) -> Iterator[int]:
        """Sampled tokens, endlessly: the caller stops at end-of-generation or its limit."""
        compiled = None
        if grammar is not None:
            self._check_grammar(grammar)
            compiled = LlamaGrammar.from_string(grammar)
        return self._llm.generate(tokens, temp=temperature, top_p=top_p, repeat_penalty=repeat_penalty,
                                  grammar=compiled)

    def _check_grammar(self, grammar: str) -> None:
        # llama.cpp answers a grammar it cannot parse with a NULL sampler, which the binding would
        # add to its chain unchecked (a crash later): parse it once here and fail cleanly instead.
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError("llama.cpp rejected the generated grammar")
        llama_cpp.llama_sampler_free(sampler)

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def token_bytes(self, token: int) -> bytes:
        return self._llm.detokenize([token])

    def close(self) -> None:
        self._llm.close()


class SchemaConverter:
    """llama.cpp's JSON-schema-to-GBNF converter, typed; rules from several visits share one grammar."""

    def __init__(self) -> None:
        self._converter: Any = _SchemaConverter(  # type: ignore[no-untyped-call]
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def resolve_refs(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``schema`` with local ``$ref``s resolved (the request's own dict is left alone)."""
        resolved: dict[str, Any] = self._converter.resolve_refs(copy.deepcopy(schema), "input")
        return resolved

    def visit(self, schema: dict[str, Any], name: str) -> str:
        """Adds rules for ``schema`` and returns the rule name that matches it (``""`` is ``root``)."""
        return str(self._converter.visit(schema, name))

    def format(self) -> str:
        return str(self._converter.format_grammar())
