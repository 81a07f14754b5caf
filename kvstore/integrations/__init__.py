"""Adapters for agent frameworks, each behind its extra and imported only when used.

- `kvstore.integrations.langchain` (``pip install "kvstore-sdk[langchain]"``): byte and
  value stores, a chat message history and an LLM cache.
- `kvstore.integrations.langgraph` (``pip install "kvstore-sdk[langgraph]"``): a
  checkpointer and a store.
- `kvstore.integrations.llama_index` (``pip install "kvstore-sdk[llama-index]"``): a
  chat store and a key-value store.

Importing this package imports no framework: import the submodule you need.
"""
